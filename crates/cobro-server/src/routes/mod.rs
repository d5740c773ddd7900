//! HTTP handlers, one module per resource.

pub mod catalog;
pub mod system;
