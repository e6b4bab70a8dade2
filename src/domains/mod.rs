//! Sending domains (issue 17, seed 001 "Set up the sender"): what a workspace publishes in
//! DNS to prove a domain and to have its mail DKIM-signed. So far the keys and the records
//! (`dkim`); the domains themselves, their checks and the senders come next.

pub mod dkim;
pub mod records;
