//! The protocol layer: HTTP, SigV4, EC2 Query parameters and XML, EBS REST-JSON.
//!
//! It turns requests into service calls and service answers (or errors) into responses;
//! it holds no EC2 semantics of its own.

pub mod ebs;
pub mod ec2;
pub mod query;
pub mod server;
pub mod sigv4;
pub mod xml;
