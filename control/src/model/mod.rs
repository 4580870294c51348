//! The namespaced resources of the API and their rules: secret kinds, broker credentials,
//! principals and roles. Each kind validates a request into a [`Prepared`] record (public
//! attributes, write-only values to seal, broker references to resolve), renders its REST
//! representation, and (for grantable kinds) renders what a proxy receives.

pub mod broker;
pub mod deliver;
pub mod gcp;
pub mod hmac;
pub mod oauth;
pub mod pg_dsn;
pub mod rules;
pub mod source;
pub mod static_secret;

use serde_json::{Map, Value, json};

use crate::ids::iso;
use crate::input::{Errors, LONG, Obj, SHORT};
use source::{BrokerRef, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Static,
    Gcp,
    Oauth,
    PgDsn,
    Hmac,
    Broker,
    Principal,
    Role,
}

impl Kind {
    pub const GRANTABLE: [Kind; 5] = [
        Kind::Static,
        Kind::Gcp,
        Kind::Oauth,
        Kind::PgDsn,
        Kind::Hmac,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Static => "ssr_",
            Kind::Gcp => "gas_",
            Kind::Oauth => "ots_",
            Kind::PgDsn => "pgs_",
            Kind::Hmac => "hms_",
            Kind::Broker => "bcr_",
            Kind::Principal => "prn_",
            Kind::Role => "role_",
        }
    }

    /// Stored in the `kind` column and used in the URL.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Static => "static_secrets",
            Kind::Gcp => "gcp_auth_secrets",
            Kind::Oauth => "oauth_token_secrets",
            Kind::PgDsn => "pg_dsn_secrets",
            Kind::Hmac => "hmac_secrets",
            Kind::Broker => "broker_credentials",
            Kind::Principal => "principals",
            Kind::Role => "roles",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        [
            Kind::Static,
            Kind::Gcp,
            Kind::Oauth,
            Kind::PgDsn,
            Kind::Hmac,
            Kind::Broker,
            Kind::Principal,
            Kind::Role,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }

    /// Human name for messages ("static secret").
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Static => "static secret",
            Kind::Gcp => "GCP auth secret",
            Kind::Oauth => "OAuth token secret",
            Kind::PgDsn => "PG DSN secret",
            Kind::Hmac => "HMAC secret",
            Kind::Broker => "broker credential",
            Kind::Principal => "principal",
            Kind::Role => "role",
        }
    }

    /// The grant attribute naming a secret of this kind.
    pub fn grant_field(self) -> &'static str {
        match self {
            Kind::Static => "static_secret_id",
            Kind::Gcp => "gcp_auth_secret_id",
            Kind::Oauth => "oauth_token_secret_id",
            Kind::PgDsn => "pg_dsn_secret_id",
            Kind::Hmac => "hmac_secret_id",
            _ => "",
        }
    }

    fn has_description(self) -> bool {
        !matches!(self, Kind::Principal | Kind::Role)
    }

    /// Read-only attributes a client may send back unchanged (GET, edit, PUT); ignored.
    fn read_only(self) -> &'static [&'static str] {
        match self {
            Kind::Broker => broker::READ_ONLY,
            _ => &["id", "created_at", "updated_at"],
        }
    }
}

/// A resource row as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub namespace: String,
    pub foreign_id: Option<String>,
    pub labels: Value,
    pub body: Map<String, Value>,
    /// Decrypted write-only values: slot -> value.
    pub sealed: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A validated write: public attributes, write-only values, broker references by slot.
#[derive(Debug, Default)]
pub struct Prepared {
    pub body: Map<String, Value>,
    pub sealed: Map<String, Value>,
    pub brokers: Vec<(String, BrokerRef)>,
    /// Broker credentials only: a new refresh_token seed (reseeds the refresh loop).
    pub refresh_token: Option<String>,
}

/// Key of the hidden body map from source slot to resolved broker credential id.
pub const BROKERS_KEY: &str = "_brokers";

/// Validation context: the request's `data` object over the stored record on update.
pub struct Ctx<'a> {
    pub input: Obj<'a>,
    pub existing: Option<&'a Stored>,
    pub errs: Errors,
    pub out: Prepared,
}

impl<'a> Ctx<'a> {
    pub fn supplied(&self, key: &str) -> bool {
        self.input.has(key)
    }

    /// Keeps the stored attribute `key` (and the sealed values and broker references under it).
    pub fn keep(&mut self, key: &str) {
        let Some(ex) = self.existing else { return };
        if let Some(v) = ex.body.get(key) {
            self.out.body.insert(key.to_owned(), v.clone());
        }
        let under = |slot: &str| slot == key || slot.starts_with(&format!("{key}."));
        for (slot, v) in &ex.sealed {
            if under(slot) {
                self.out.sealed.insert(slot.clone(), v.clone());
            }
        }
        if let Some(Value::Object(b)) = ex.body.get(BROKERS_KEY) {
            let kept = self
                .out
                .body
                .entry(BROKERS_KEY)
                .or_insert_with(|| json!({}));
            for (slot, id) in b {
                if under(slot)
                    && let Some(m) = kept.as_object_mut()
                {
                    m.insert(slot.clone(), id.clone());
                }
            }
        }
    }

    /// Supplied: validate with `f` and store (null stores null); absent: keep the stored value.
    pub fn attr(&mut self, key: &str, f: impl FnOnce(&mut Self) -> Option<Value>) {
        if !self.supplied(key) {
            self.keep(key);
            return;
        }
        if self.input.present(key).is_none() {
            self.out.body.insert(key.to_owned(), Value::Null);
            return;
        }
        if let Some(v) = f(self) {
            self.out.body.insert(key.to_owned(), v);
        }
    }

    /// The effective value of `key` after this write (supplied, else stored).
    pub fn effective(&self, key: &str) -> Option<&Value> {
        self.out.body.get(key).filter(|v| !v.is_null())
    }

    /// The stored type of the source at `slot` (sources' type is immutable).
    fn previous_type(&self, key: &str) -> Option<String> {
        let v = self.existing?.body.get(key)?;
        source::stored_type(v).map(str::to_owned)
    }

    /// Registers a validated source at `slot`: seals its value, records its broker reference.
    pub fn add_source(&mut self, slot: &str, s: Source) -> Value {
        if let Some(secret) = s.secret {
            self.out
                .sealed
                .insert(slot.to_owned(), Value::String(secret));
        }
        if let Some(b) = s.broker {
            self.out.brokers.push((slot.to_owned(), b));
        }
        s.stored
    }

    /// A single source attribute (`source`, `keyfile`, `dsn`).
    pub fn source_attr(&mut self, key: &str) {
        let prev = self.previous_type(key);
        self.attr(key, |c| {
            let o = c.input.object(key, &mut c.errs)?;
            let at = c.input.field(key);
            let s = source::validate(Obj::new(o, &at), prev.as_deref(), &mut c.errs)?;
            Some(c.add_source(key, s))
        });
    }

    /// A map of name -> source (`credentials`, `token_endpoint_headers`).
    pub fn source_map(&mut self, key: &str, name_max: usize) -> Option<Vec<String>> {
        let mut names = None;
        self.attr(key, |c| {
            let o = c.input.object(key, &mut c.errs)?;
            let mut out = Map::new();
            for (name, v) in o {
                let at = format!("{}.{name}", c.input.field(key));
                if name.is_empty() || name.len() > name_max {
                    c.errs.add(&at, "name is too long or blank");
                    continue;
                }
                let Some(m) = v.as_object() else {
                    c.errs.add(&at, "must be a secret source object");
                    continue;
                };
                if let Some(s) = source::validate(Obj::new(m, &at), None, &mut c.errs) {
                    let stored = c.add_source(&format!("{key}.{name}"), s);
                    out.insert(name.clone(), stored);
                }
            }
            names = Some(out.keys().cloned().collect());
            Some(Value::Object(out))
        });
        names.or_else(|| {
            self.effective(key)
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
        })
    }

    pub fn string_attr(&mut self, key: &str, max: usize) {
        self.attr(key, |c| {
            c.input.string(key, max, &mut c.errs).map(Value::String)
        });
    }

    pub fn bool_attr(&mut self, key: &str, default: bool) {
        self.attr(key, |c| c.input.bool(key, &mut c.errs).map(Value::Bool));
        if self.effective(key).is_none() {
            self.out.body.insert(key.to_owned(), Value::Bool(default));
        }
    }

    pub fn strings_attr(&mut self, key: &str, max: usize) {
        self.attr(key, |c| {
            c.input.strings(key, max, &mut c.errs).map(|v| json!(v))
        });
    }

    pub fn rules_attr(&mut self) {
        self.attr("rules", |c| {
            rules::validate(c.input, &mut c.errs).map(Value::Array)
        });
    }

    /// `name` and `description`, common to every kind.
    pub fn common(&mut self, kind: Kind) {
        self.string_attr("name", SHORT);
        if kind.has_description() {
            self.string_attr("description", LONG);
        }
    }

    pub fn require(&mut self, key: &str) {
        if self.effective(key).is_none() {
            let f = self.input.field(key);
            self.errs.add(&f, "can't be blank");
        }
    }

    /// A required, non-empty array attribute (after merging with the stored record).
    pub fn require_nonempty(&mut self, key: &str, msg: &str) {
        let empty = self
            .effective(key)
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty {
            let f = self.input.field(key);
            self.errs.add(&f, msg);
        }
    }

    pub fn one_of(&mut self, key: &str, values: &[&str]) {
        self.attr(key, |c| {
            let s = c.input.string(key, SHORT, &mut c.errs)?;
            if values.contains(&s.as_str()) {
                Some(Value::String(s))
            } else {
                let f = c.input.field(key);
                c.errs
                    .add(&f, format!("must be one of {}", values.join(", ")));
                None
            }
        });
    }
}

fn attrs(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Static => static_secret::ATTRS,
        Kind::Gcp => gcp::ATTRS,
        Kind::Oauth => oauth::ATTRS,
        Kind::PgDsn => pg_dsn::ATTRS,
        Kind::Hmac => hmac::ATTRS,
        Kind::Broker => broker::ATTRS,
        Kind::Principal | Kind::Role => &[],
    }
}

/// Validates the kind-specific attributes of a create or update.
pub fn prepare(kind: Kind, input: Obj<'_>, existing: Option<&Stored>) -> Result<Prepared, Errors> {
    let mut allowed: Vec<&str> = vec!["namespace", "foreign_id", "labels", "name"];
    if kind.has_description() {
        allowed.push("description");
    }
    allowed.extend_from_slice(kind.read_only());
    allowed.extend_from_slice(attrs(kind));
    let mut c = Ctx {
        input,
        existing,
        errs: Errors::default(),
        out: Prepared::default(),
    };
    input.check_keys(&allowed, &mut c.errs);
    c.common(kind);
    match kind {
        Kind::Static => static_secret::prepare(&mut c),
        Kind::Gcp => gcp::prepare(&mut c),
        Kind::Oauth => oauth::prepare(&mut c),
        Kind::PgDsn => pg_dsn::prepare(&mut c),
        Kind::Hmac => hmac::prepare(&mut c),
        Kind::Broker => broker::prepare(&mut c),
        Kind::Principal | Kind::Role => {}
    }
    if kind != Kind::Broker {
        // Every attribute is present in the representation: unset ones as null (lists as []).
        for key in attrs(kind) {
            let empty = if matches!(*key, "rules" | "scopes") {
                json!([])
            } else {
                Value::Null
            };
            c.out.body.entry(*key).or_insert(empty);
        }
    }
    if c.errs.is_empty() {
        Ok(c.out)
    } else {
        Err(c.errs)
    }
}

/// The REST representation (never a write-only value, never a hidden key).
pub fn render(kind: Kind, s: &Stored) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(s.id));
    out.insert("namespace".into(), json!(s.namespace));
    out.insert("foreign_id".into(), json!(s.foreign_id));
    out.insert(
        "name".into(),
        s.body.get("name").cloned().unwrap_or(Value::Null),
    );
    if kind.has_description() {
        let d = s.body.get("description").cloned().unwrap_or(Value::Null);
        out.insert("description".into(), d);
    }
    out.insert("labels".into(), s.labels.clone());
    for (k, v) in &s.body {
        if k.starts_with('_') || out.contains_key(k) {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    out.insert("created_at".into(), json!(iso(s.created_at)));
    out.insert("updated_at".into(), json!(iso(s.updated_at)));
    Value::Object(out)
}
