//! Background workers. Each claims work from the store with a lease, so any number of server
//! processes can run them side by side.

pub mod fulfilment;
