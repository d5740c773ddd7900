//! HTTP handlers, one module per resource.

pub mod catalog;
pub mod exchange;
pub mod org;
pub mod paid;
pub mod purchases;
pub mod system;
pub mod webhooks;
