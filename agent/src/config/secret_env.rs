//! The environment variables the active config reads secrets from: `env` sources, the token
//! variables of the 1Password sources, `*_env` keys (judge, PostgreSQL client password,
//! management API key). `iron-agent run -- CMD` removes them from CMD's environment: a
//! credential meant for injection must not be readable by the workload it is injected for.

use std::collections::BTreeSet;

use super::Config;
use super::transforms::{SecretSource, TransformEntry, TransformSpec};

/// Every variable name a secret source of `cfg` reads, sorted.
pub fn secret_env_vars(cfg: &Config) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let policies = cfg.intercept.policies.iter().flat_map(|p| &p.transforms);
    for t in cfg.transforms.iter().chain(policies) {
        transform(t, &mut out);
    }
    if let Some(g) = &cfg.mcp_gateway {
        for c in g.routes.iter().flat_map(|r| &r.credentials) {
            source(c.source.as_ref(), &mut out);
        }
    }
    for u in &cfg.postgres.upstreams {
        source(u.dsn.as_ref(), &mut out);
    }
    name(&cfg.postgres.client.password_env, &mut out);
    if let Some(v) = cfg.management.effective_api_key_env() {
        name(v, &mut out);
    }
    out
}

fn transform(t: &TransformEntry, out: &mut BTreeSet<String>) {
    // Exhaustive on purpose: a new transform kind must say whether it reads secrets.
    match &t.spec {
        TransformSpec::Secrets(c) => c
            .secrets
            .iter()
            .for_each(|s| source(s.source.as_ref(), out)),
        TransformSpec::OauthToken(c) => {
            for e in &c.tokens {
                e.token_endpoint_headers
                    .values()
                    .for_each(|s| source(Some(s), out));
                for s in [
                    &e.refresh_token,
                    &e.client_id,
                    &e.client_secret,
                    &e.username,
                    &e.password,
                    &e.issuer,
                    &e.subject,
                    &e.private_key,
                    &e.private_key_id,
                ] {
                    source(s.as_ref(), out);
                }
            }
        }
        TransformSpec::GcpAuth(c) => source(c.keyfile.as_ref(), out),
        TransformSpec::GcpIdToken(c) => source(c.keyfile.as_ref(), out),
        TransformSpec::AwsAuth(c) => {
            for s in [&c.access_key_id, &c.secret_access_key, &c.session_token] {
                source(s.as_ref(), out);
            }
        }
        TransformSpec::HmacSign(c) => c.credentials.values().for_each(|s| source(Some(s), out)),
        TransformSpec::Judge(c) => {
            if let Some(p) = &c.provider {
                name(&p.api_key_env, out);
                source(p.api_key.as_ref(), out);
            }
        }
        TransformSpec::Allowlist(_)
        | TransformSpec::HeaderAllowlist(_)
        | TransformSpec::Annotate(_)
        | TransformSpec::BodyCapture(_)
        | TransformSpec::Grpc(_) => {}
    }
}

fn source(s: Option<&SecretSource>, out: &mut BTreeSet<String>) {
    match s {
        Some(SecretSource::Env(e)) => name(&e.var, out),
        Some(SecretSource::OnePassword(o)) => {
            name(
                o.token_env.as_deref().unwrap_or("OP_SERVICE_ACCOUNT_TOKEN"),
                out,
            );
        }
        Some(SecretSource::OnePasswordConnect(o)) => {
            name(o.token_env.as_deref().unwrap_or("OP_CONNECT_TOKEN"), out);
        }
        Some(
            SecretSource::File(_)
            | SecretSource::AwsSm(_)
            | SecretSource::AwsSsm(_)
            | SecretSource::ControlPlane(_),
        )
        | None => {}
    }
}

fn name(v: &str, out: &mut BTreeSet<String>) {
    let v = v.trim();
    if !v.is_empty() {
        out.insert(v.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_env_source_and_token_variable() {
        let yaml = r#"
dns: {proxy_ip: 10.0.0.2}
tls: {mode: sni-only}
transforms:
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: GH_TOKEN}
          inject: {header: Authorization}
          rules: [{host: api.github.com}]
        - source: {type: 1password, secret_ref: "op://v/i/f"}
          inject: {header: X-Key}
          rules: [{host: a.test}]
        - source: {type: file, path: /etc/key}
          inject: {header: X-File}
          rules: [{host: b.test}]
  - name: aws_auth
    config:
      access_key_id: {type: env, var: AWS_KEY_FOR_AGENT}
      secret_access_key: {type: env, var: AWS_SECRET_FOR_AGENT}
      rules: [{host: "*.amazonaws.com"}]
intercept:
  mode: ebpf
  policies:
    - name: p
      uids: [4242]
      transforms:
        - name: secrets
          config:
            secrets:
              - source: {type: env, var: POLICY_TOKEN}
                inject: {header: X-P}
                rules: [{host: c.test}]
"#;
        let cfg = crate::config::parse(yaml).unwrap();
        let vars: Vec<String> = secret_env_vars(&cfg).into_iter().collect();
        assert_eq!(
            vars,
            [
                "AWS_KEY_FOR_AGENT",
                "AWS_SECRET_FOR_AGENT",
                "GH_TOKEN",
                "OP_SERVICE_ACCOUNT_TOKEN",
                "POLICY_TOKEN"
            ]
        );
    }
}
