//! Reliability (issue 21): early answers over HTTP/2, resource limits, and faults injected
//! through the running agent. Each test asserts what the client sees and what is audited.

mod faults;
mod h2_early;
mod head_limits;
mod limits;
