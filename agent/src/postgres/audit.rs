//! Audit records of the PostgreSQL proxy: exactly one per session, written when it ends
//! whatever path it took (refused at login, upstream failure, relayed until a side closed), and
//! one per refused statement. They share the agent's record shape (`msg: "request"`) with
//! `protocol: "postgres"` and a `postgres` group; see docs/postgres.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::audit::{Action, AuditRecord, AuditSink, PostgresAudit};
use crate::ebpf::ConnOrigin;

use super::relay::Stats;
use super::sql::Refusal;

pub const PROTOCOL: &str = "postgres";
/// `rejected_by` of everything the proxy itself refuses.
pub const REJECTED_BY: &str = "postgres";

/// How a session ended, for its record.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Relayed until a side closed.
    Relayed,
    /// Refused by the proxy during login (`reason` and the SQLSTATE sent).
    Refused {
        reason: &'static str,
        sqlstate: &'static str,
    },
    /// Failed: upstream unreachable or rejected the setup, DSN unusable, protocol error.
    Failed {
        sqlstate: Option<&'static str>,
        error: String,
    },
    /// The client went away during login (psql does so to prompt for a password).
    ClientGone,
}

/// The session record under construction; [`SessionAudit::finish`] writes it.
pub struct SessionAudit {
    sink: Arc<AuditSink>,
    started: Instant,
    base: AuditRecord,
    pub pg: PostgresAudit,
}

impl SessionAudit {
    pub fn new(
        sink: Arc<AuditSink>,
        peer: SocketAddr,
        origin: Option<&ConnOrigin>,
        user: Option<String>,
    ) -> Self {
        let mut base = AuditRecord {
            remote_addr: peer.to_string(),
            mode: PROTOCOL,
            protocol: PROTOCOL,
            ..AuditRecord::default()
        };
        if let Some(o) = origin {
            base.uid = Some(o.uid.0);
            base.user = user;
            base.pid = Some(o.pid);
            base.comm = Some(o.comm.clone());
            base.orig_dst = Some(o.orig_dst.to_string());
        }
        Self {
            sink,
            started: Instant::now(),
            base,
            pg: PostgresAudit {
                event: "session",
                ..PostgresAudit::default()
            },
        }
    }

    /// The upstream the route leads to (`host:port` list), also the record's `host`.
    pub fn set_upstream(&mut self, hosts: String) {
        self.base.host = hosts.clone();
        self.pg.upstream = hosts;
    }

    /// One record for a refused statement, now (`sql` is empty for a fastpath FunctionCall,
    /// which has no statement text: the record then has no `statement`).
    pub fn refused_statement(&self, refusal: Refusal, sql: &str) {
        let mut rec = self.base.clone();
        rec.action = Action::Reject;
        rec.rejected_by = Some(REJECTED_BY.into());
        rec.reason = Some(refusal.kind().into());
        rec.postgres = Some(PostgresAudit {
            event: "statement",
            sqlstate: Some(refusal.sqlstate().into()),
            statement: (!sql.is_empty())
                .then(|| super::sql::normalized(sql))
                .flatten(),
            ..self.session_identity()
        });
        self.sink.write(rec);
    }

    fn session_identity(&self) -> PostgresAudit {
        PostgresAudit {
            database: self.pg.database.clone(),
            user: self.pg.user.clone(),
            upstream: self.pg.upstream.clone(),
            role: self.pg.role.clone(),
            ..PostgresAudit::default()
        }
    }

    /// Writes the session record.
    pub fn finish(mut self, outcome: Outcome, stats: &Stats) {
        let mut rec = std::mem::take(&mut self.base);
        rec.duration_ms = (self.started.elapsed().as_micros() as f64) / 1000.0;
        match outcome {
            Outcome::Relayed => rec.action = Action::Allow,
            Outcome::Refused { reason, sqlstate } => {
                rec.action = Action::Reject;
                rec.rejected_by = Some(REJECTED_BY.into());
                rec.reason = Some(reason.into());
                self.pg.sqlstate = Some(sqlstate.into());
            }
            Outcome::Failed { sqlstate, error } => {
                rec.action = Action::Error;
                rec.error = Some(error);
                self.pg.sqlstate = sqlstate.map(str::to_string);
            }
            Outcome::ClientGone => rec.action = Action::ClientCancel,
        }
        self.pg.bytes_from_client = Some(Stats::get(&stats.bytes_from_client));
        self.pg.bytes_to_client = Some(Stats::get(&stats.bytes_to_client));
        self.pg.statements = Some(Stats::get(&stats.statements));
        self.pg.statements_refused = Some(Stats::get(&stats.refused));
        rec.postgres = Some(std::mem::take(&mut self.pg));
        self.sink.write(rec);
    }
}
