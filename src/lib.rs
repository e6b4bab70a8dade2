//! Mailroom: a self-hosted console, one binary, through which an organization sends email
//! and SMS. See `README.md` and `../shared/DESIGN.md` for the map.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod delivery;
pub mod domains;
pub mod error;
pub mod health;
pub mod ids;
pub mod messages;
pub mod providers;
pub mod senders;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod web;
pub mod workspaces;
