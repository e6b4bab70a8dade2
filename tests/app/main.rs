//! The one integration test binary: the real application, over HTTP, on SQLite and on
//! PostgreSQL, plus the CLI as a child process and a real browser.

mod dns_server;
mod helpers;
mod smtp_server;

mod api;
mod auth;
mod browser;
mod cli;
mod crash;
mod csrf;
mod delivery;
mod domains;
mod faults;
mod history;
mod isolation;
mod members;
mod migrations;
mod providers;
mod roles;
mod search;
mod senders;
mod sessions;
mod setup;
mod smtp_client;
mod web;
