//! Integration tests: the real server over HTTP, driven through `cobro-sdk` where the SDK can
//! express the request, and through raw HTTP where the request must be malformed.

mod auth;
mod catalog;
mod common;
mod fulfilment;
mod http;
mod purchases;
mod webhooks;
mod x402;
