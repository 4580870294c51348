//! Identify: who opened a connection, where it was going, and where each request on it goes.
//!
//! - Connection level ([`conn`]): the original destination and identity of a connection the
//!   eBPF programs redirected, or the identity of a task that connected to an agent listener
//!   itself, both recorded by the kernel ([`origin::OrigDstLookup`], implemented over the
//!   kernel map by [`crate::ebpf`]); they pick the identity profile ([`PolicyId`]) that judges
//!   the connection, or refuse it.
//! - Request level ([`request`]): the destination of one HTTP request, from its Host header or
//!   absolute-form URI, and the refusals for ambiguous ones.
//!
//! The types here ([`Uid`], [`PolicyId`], [`CgroupId`], [`HostName`], [`ClientAddr`],
//! [`LocalAddr`]) are the identities every later stage uses.

pub mod addr;
pub mod caller;
pub mod conn;
pub mod host;
pub mod ids;
pub mod origin;
pub mod request;

pub use addr::{ClientAddr, LocalAddr};
pub use caller::Caller;
pub use conn::{ConnIdentifier, ConnIdentity, PeerRefusal};
pub use host::HostName;
pub use ids::{CgroupId, PolicyId, Uid};
pub use origin::{ConnOrigin, MockOrigDst, OrigDstLookup, PeerMode, Route};
pub use request::{Refusal, Target, identify};

/// Names for the audit record's `user` field, by uid.
pub trait UserNames: Send + Sync {
    fn name_of(&self, uid: Uid) -> Option<String>;
}
