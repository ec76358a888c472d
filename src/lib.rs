//! Kiln: a self-hosted machine-image service that speaks the EC2 API.
//!
//! Layers, from the wire inwards: [`api`] (protocol), [`service`] (EC2 semantics),
//! [`store`] (durable metadata), [`blocks`] (snapshot data), [`volumes`] (copy-on-write
//! volumes served over NBD). See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod api;
pub mod blocks;
pub mod client;
pub mod compute;
pub mod error;
pub mod quickstart;
pub mod service;
pub mod store;
pub mod volumes;
