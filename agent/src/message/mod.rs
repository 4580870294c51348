//! HTTP message types and helpers shared by every stage: the body and request/response types
//! the pipeline, the upstream client and the agent's own answers use ([`body`]), hop-by-hop
//! header removal ([`hop_by_hop`]) and configured header-name casing ([`header_case`]).
//!
//! Below every stage of the data path: it imports none of them.

pub mod body;
pub mod header_case;
pub mod hop_by_hop;

pub use body::{BoxError, ProxyBody, ProxyRequest, ProxyResponse};
