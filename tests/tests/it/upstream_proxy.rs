//! `proxy.upstream_proxy` end to end: the real agent chains its upstream dials through local
//! HTTP CONNECT (plain and TLS) and SOCKS5 proxies written in the test support crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use iron_agent_tests::client::get;
use iron_agent_tests::config::{Tls, UpstreamProxy};
use iron_agent_tests::proxies::TestProxy;
use iron_agent_tests::{
    Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request, https_request,
};

/// `upstream_deny_cidrs: []`: the test origins and proxies on loopback are reachable.
const ALLOW_LOOPBACK: Option<&[&str]> = Some(&[]);
const PASSWORD: &str = "pr0xy-s3cret";

struct Setup {
    mitm: TestCa,
    /// Signs the origins' and the TLS proxy's certificates; the agent trusts it.
    upstream_ca: TestCa,
    ca_paths: (PathBuf, PathBuf),
    upstream_ca_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mitm = TestCa::new("iron-agent test MITM CA");
        let ca_paths = mitm.write(dir.path());
        let upstream_ca = TestCa::new("test upstream CA");
        let upstream_ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca_path, &upstream_ca.cert_pem).unwrap();
        Setup {
            mitm,
            upstream_ca,
            ca_paths,
            upstream_ca_path,
            dir,
        }
    }

    /// A config resolving names through `zone`, allowing `*.test`; `deny` is
    /// `upstream_deny_cidrs` (`None`: the default, which covers loopback), `proxy` the
    /// `upstream_proxy` settings.
    fn config(&self, zone: SocketAddr, deny: Option<&[&str]>, proxy: UpstreamProxy) -> AgentConfig {
        AgentConfig::loopback(&self.ca_paths.0, &self.ca_paths.1)
            .resolver(zone)
            .transforms([Transform::allowlist(&["*.test"])])
            .with(|c| {
                c.proxy.upstream_response_header_timeout = Some("5s".into());
                c.proxy.upstream_deny_cidrs =
                    deny.map(|d| d.iter().map(|s| s.to_string()).collect());
                c.proxy.upstream_proxy = Some(proxy);
            })
    }

    fn agent(&self, config: &AgentConfig, env: &[(&str, String)]) -> Agent {
        let mut b =
            Agent::with(config).env("SSL_CERT_FILE", self.upstream_ca_path.to_string_lossy());
        for (k, v) in env {
            b = b.env(k, v.clone());
        }
        b.start()
    }

    async fn https_origin(&self) -> Origin {
        let names = ["api.test", "direct.test", "local.test"]
            .map(String::from)
            .to_vec();
        Origin::start(OriginKind::Https { names }, Some(&self.upstream_ca)).await
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        self.mitm.client_config()
    }
}

/// `direct.test` and `local.test` resolve locally; `api.test` does not exist for the agent's
/// resolver, so a request to it only succeeds through a proxy that resolves it.
async fn zone() -> SocketAddr {
    iron_agent_tests::dns::fake_zone(&[
        ("direct.test", "127.0.0.1"),
        ("local.test", "127.0.0.1"),
        ("proxy.test", "127.0.0.1"),
    ])
    .await
}

fn http_proxy(url: String) -> UpstreamProxy {
    UpstreamProxy {
        http_proxy: Some(url),
        ..UpstreamProxy::default()
    }
}

fn https_proxy(url: String) -> UpstreamProxy {
    UpstreamProxy {
        https_proxy: Some(url),
        ..UpstreamProxy::default()
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn assert_no_credentials(agent: &Agent) {
    let logs = agent.logs();
    assert!(
        !logs.contains(PASSWORD),
        "proxy password in agent output:\n{logs}"
    );
    let b64 = basic("agent", PASSWORD);
    assert!(
        !logs.contains(&b64[6..]),
        "proxy credentials in agent output:\n{logs}"
    );
}

#[test]
fn connect_proxy_carries_http_and_https_and_no_proxy_bypasses_it() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let http_origin = Origin::start(OriginKind::Http, None).await;
        let https_origin = s.https_origin().await;
        let proxy = TestProxy::connect(Some(&basic("agent", PASSWORD)), None).await;
        let url = format!("http://agent:{PASSWORD}@{}", proxy.addr);
        let agent = s.agent(
            &s.config(
                zone().await,
                ALLOW_LOOPBACK,
                UpstreamProxy {
                    http_proxy: Some(url.clone()),
                    https_proxy: Some(url),
                    no_proxy: Some("example.com, .unrelated, direct.test".into()),
                },
            ),
            &[],
        );

        // Plain HTTP: tunnelled with CONNECT too, credentials sent to the proxy.
        let host = format!("api.test:{}", http_origin.port());
        let r = http_request(agent.addr("http"), get(&host, "/via-proxy")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/via-proxy");
        assert_eq!(r.echoed_header("host").as_deref(), Some(host.as_str()));
        assert!(r.echoed_header("proxy-authorization").is_none());
        let seen = proxy.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].target, host);
        assert_eq!(
            seen[0].auth.as_deref(),
            Some(basic("agent", PASSWORD).as_str())
        );

        // HTTPS through the MITM listener: CONNECT, then TLS to the origin over the tunnel.
        let host = format!("api.test:{}", https_origin.port());
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.client(),
            get(&host, "/tls"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/tls");
        assert_eq!(https_origin.hits(), 1);
        assert_eq!(proxy.count(), 2);
        assert_eq!(proxy.seen()[1].target, host);

        // no_proxy: dialled directly (the name resolves locally), the proxy sees nothing.
        let host = format!("direct.test:{}", http_origin.port());
        let r = http_request(agent.addr("http"), get(&host, "/direct")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let host = format!("direct.test:{}", https_origin.port());
        let r = https_request(
            agent.addr("https"),
            "direct.test",
            s.client(),
            get(&host, "/d"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(proxy.count(), 2, "{:?}", proxy.seen());
        assert_eq!(http_origin.hits(), 2);

        let audits = agent.wait_audits(4);
        assert_eq!(audits.len(), 4);
        assert!(
            audits
                .iter()
                .all(|a| a["action"] == "allow" && a["status_code"] == 200)
        );
        assert!(agent.logs().contains("upstream proxy active"));
        assert_no_credentials(&agent);
    });
}

#[test]
fn proxy_rejecting_credentials_is_a_502_naming_the_proxy() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let origin = Origin::start(OriginKind::Http, None).await;
        let proxy = TestProxy::connect(Some(&basic("agent", "other")), None).await;
        let agent = s.agent(
            &s.config(
                zone().await,
                ALLOW_LOOPBACK,
                http_proxy(format!("http://agent:{PASSWORD}@{}", proxy.addr)),
            ),
            &[],
        );
        let r = http_request(
            agent.addr("http"),
            get(&format!("api.test:{}", origin.port()), "/"),
        )
        .await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(origin.hits(), 0);
        let a = agent.audit_where(|a| a["path"] == "/");
        let err = a["error"].as_str().unwrap();
        assert!(
            err.contains(&format!("proxy http://{}", proxy.addr)) && err.contains("407"),
            "{err}"
        );
        assert_no_credentials(&agent);
    });
}

#[test]
fn environment_overrides_the_config_per_field() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let origin = s.https_origin().await;
        let proxy = TestProxy::connect(None, None).await;
        // The YAML proxy is dead and its no_proxy would exempt api.test; the environment
        // replaces both. http_proxy is not in the environment, so the YAML value stays.
        let agent = s.agent(
            &s.config(
                zone().await,
                ALLOW_LOOPBACK,
                UpstreamProxy {
                    https_proxy: Some("http://127.0.0.1:1".into()),
                    http_proxy: Some("http://127.0.0.1:1".into()),
                    no_proxy: Some("api.test".into()),
                },
            ),
            &[
                ("https_proxy", format!("http://{}", proxy.addr)),
                ("NO_PROXY", "direct.test".into()),
            ],
        );
        let host = format!("api.test:{}", origin.port());
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.client(),
            get(&host, "/env"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(proxy.seen()[0].target, host);
        assert!(proxy.seen()[0].auth.is_none());

        // Plain HTTP still uses the YAML http_proxy (dead): a 502 naming it.
        let r = http_request(agent.addr("http"), get("api.test:80", "/yaml")).await;
        assert_eq!(r.status, 502);
        let a = agent.audit_where(|a| a["path"] == "/yaml");
        let err = a["error"].as_str().unwrap();
        assert!(
            err.starts_with("proxy http://127.0.0.1:1: dial tcp 127.0.0.1:1:"),
            "{err}"
        );
        assert_eq!(proxy.count(), 1);
    });
}

#[test]
fn unreachable_proxy_is_one_502_with_one_audit_record() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        // A port that was just free: nothing listens there.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let agent = s.agent(
            &s.config(
                zone().await,
                ALLOW_LOOPBACK,
                https_proxy(format!("https://agent:{PASSWORD}@{dead}")),
            ),
            &[],
        );
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.client(),
            get("api.test", "/unreachable"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 502, "{}", r.text());
        let a = agent.audit_where(|a| a["path"] == "/unreachable");
        assert_eq!(a["status_code"], 502);
        let err = a["error"].as_str().unwrap();
        assert!(
            err.starts_with(&format!("proxy https://{dead}: dial tcp {dead}: ")),
            "{err}"
        );
        assert!(err.contains("refused"), "{err}");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(agent.audits().len(), 1, "{}", agent.logs());
        assert_no_credentials(&agent);
    });
}

#[test]
fn deny_list_covers_the_proxy_address_and_ip_destinations() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let proxy = TestProxy::connect(None, None).await;
        // Default deny list (loopback included): the proxy on 127.0.0.1 is never dialled.
        let agent = s.agent(
            &s.config(
                zone().await,
                None,
                http_proxy(format!("http://{}", proxy.addr)),
            ),
            &[],
        );
        assert!(agent.logs().contains("upstream proxy address is in upstream_deny_cidrs"));
        let r = http_request(agent.addr("http"), get("api.test", "/denied-proxy")).await;
        assert_eq!(r.status, 502);
        let a = agent.audit_where(|a| a["path"] == "/denied-proxy");
        let err = a["error"].as_str().unwrap();
        assert_eq!(
            err,
            format!(
                "proxy http://{0}: dial tcp {0}: denied by upstream_deny_cidrs: 127.0.0.1 in 127.0.0.0/8",
                proxy.addr
            )
        );
        assert_eq!(proxy.count(), 0);
        drop(agent);

        // An IP destination in the deny list is refused before the proxy is asked, although
        // the proxy itself is allowed.
        let agent = s.agent(
            &s.config(
                zone().await,
                Some(&["10.0.0.0/8"]),
                http_proxy(format!("http://{}", proxy.addr)),
            )
            .with(|c| c.transforms = vec![Transform::allowlist(&["*"])]),
            &[],
        );
        let r = http_request(agent.addr("http"), get("10.1.2.3", "/denied-ip")).await;
        assert_eq!(r.status, 502);
        let a = agent.audit_where(|a| a["path"] == "/denied-ip");
        assert_eq!(
            a["error"],
            "dial tcp 10.1.2.3:80: denied by upstream_deny_cidrs: 10.1.2.3 in 10.0.0.0/8"
        );
        assert_eq!(proxy.count(), 0);
        // A name goes to the proxy, which resolves it: the agent only checked the proxy.
        let origin = Origin::start(OriginKind::Http, None).await;
        let host = format!("api.test:{}", origin.port());
        let r = http_request(agent.addr("http"), get(&host, "/name")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(proxy.seen()[0].target, host);
    });
}

#[test]
fn socks5_resolves_locally_and_socks5h_sends_the_name() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let http_origin = Origin::start(OriginKind::Http, None).await;
        let https_origin = s.https_origin().await;
        let proxy = TestProxy::socks5(Some(&format!("agent:{PASSWORD}"))).await;
        let agent = s.agent(
            &s.config(
                zone().await,
                ALLOW_LOOPBACK,
                UpstreamProxy {
                    http_proxy: Some(format!("socks5://agent:{PASSWORD}@{}", proxy.addr)),
                    https_proxy: Some(format!("socks5h://agent:{PASSWORD}@{}", proxy.addr)),
                    no_proxy: None,
                },
            ),
            &[],
        );
        // socks5://: the agent resolves local.test itself and asks for the address.
        let host = format!("local.test:{}", http_origin.port());
        let r = http_request(agent.addr("http"), get(&host, "/socks5")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echoed_header("host").as_deref(), Some(host.as_str()));
        let seen = proxy.seen();
        assert_eq!(seen[0].target, format!("127.0.0.1:{}", http_origin.port()));
        assert_eq!(
            seen[0].auth.as_deref(),
            Some(format!("agent:{PASSWORD}").as_str())
        );

        // socks5h://: the name goes to the proxy (the agent cannot resolve api.test).
        let host = format!("api.test:{}", https_origin.port());
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.client(),
            get(&host, "/socks5h"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(proxy.seen()[1].target, host);

        // socks5:// with a name the agent cannot resolve fails locally, naming the lookup.
        let r = http_request(agent.addr("http"), get("api.test:80", "/nxdomain")).await;
        assert_eq!(r.status, 502);
        assert_eq!(proxy.count(), 2);
        assert_no_credentials(&agent);
    });
}

#[test]
fn https_proxy_speaks_tls_to_the_proxy() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let origin = s.https_origin().await;
        let acceptor = s.upstream_ca.acceptor(&["proxy.test"], &[]);
        let proxy = TestProxy::connect(Some(&basic("agent", PASSWORD)), Some(acceptor)).await;
        let agent = s.agent(
            &s.config(
                zone().await,
                ALLOW_LOOPBACK,
                https_proxy(format!(
                    "https://agent:{PASSWORD}@proxy.test:{}",
                    proxy.addr.port()
                )),
            ),
            &[],
        );
        let host = format!("api.test:{}", origin.port());
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.client(),
            get(&host, "/tls-proxy"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(proxy.seen()[0].target, host);
        assert_eq!(origin.hits(), 1);
        assert_no_credentials(&agent);
        drop(agent);

        // Without the CA that signed the proxy's certificate the handshake fails: a 502.
        let other = s.dir.path().join("other-ca.pem");
        std::fs::write(&other, TestCa::new("unrelated").cert_pem).unwrap();
        let agent = Agent::with(&s.config(
            zone().await,
            ALLOW_LOOPBACK,
            https_proxy(format!("https://proxy.test:{}", proxy.addr.port())),
        ))
        .env("SSL_CERT_FILE", other.to_string_lossy())
        .start();
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.client(),
            get(&host, "/untrusted"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 502);
        let a = agent.audit_where(|a| a["path"] == "/untrusted");
        let err = a["error"].as_str().unwrap();
        assert!(
            err.starts_with(&format!(
                "proxy https://proxy.test:{}: tls handshake",
                proxy.addr.port()
            )),
            "{err}"
        );
        assert_eq!(proxy.count(), 1);
    });
}

#[test]
fn bad_proxy_url_refuses_startup_without_echoing_credentials() {
    let s = Setup::new();
    let rt = iron_agent_tests::runtime();
    let zone = rt.block_on(zone());
    let mut agent = s.agent(
        &s.config(
            zone,
            ALLOW_LOOPBACK,
            https_proxy(format!("ftp://agent:{PASSWORD}@proxy.test:21")),
        ),
        &[],
    );
    let status = agent.wait_exit(std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let logs = agent.logs();
    assert!(
        logs.contains("proxy.upstream_proxy.https_proxy: invalid proxy URL"),
        "{logs}"
    );
    assert!(logs.contains("unsupported proxy scheme"), "{logs}");
    assert_no_credentials(&agent);

    // check-config reads the same environment: a bad HTTPS_PROXY fails it, named.
    let good = s.config(
        zone,
        ALLOW_LOOPBACK,
        UpstreamProxy {
            no_proxy: Some(String::new()),
            ..UpstreamProxy::default()
        },
    );
    let mut check = Agent::with(&good)
        .args(&["check-config", "--config", "{config}"])
        .env(
            "HTTPS_PROXY",
            format!("http://agent:{PASSWORD}@proxy.test/some/path"),
        )
        .start();
    assert_eq!(
        check.wait_exit(std::time::Duration::from_secs(10)).code(),
        Some(1)
    );
    let logs = check.logs();
    assert!(
        logs.contains("error: HTTPS_PROXY: invalid proxy URL \"http://[redacted]@proxy.test/some/path\": a proxy URL has no path"),
        "{logs}"
    );
    assert_no_credentials(&check);
}

#[test]
fn sni_only_passthrough_dials_through_the_proxy() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = Setup::new();
        let origin = s.https_origin().await;
        // sni-only dials port 443 of the name; the proxy sends that tunnel to the origin.
        let proxy = TestProxy::connect_to(origin.addr).await;
        let config = AgentConfig {
            tls: Tls {
                mode: Some("sni-only".into()),
                ..Tls::default()
            },
            ..s.config(
                zone().await,
                ALLOW_LOOPBACK,
                https_proxy(format!("http://{}", proxy.addr)),
            )
        }
        .with(|c| c.proxy.upstream_response_header_timeout = None);
        let agent = s.agent(&config, &[]);
        // The client trusts the origin's CA only: TLS is end to end, through both proxies.
        let r = https_request(
            agent.addr("https"),
            "api.test",
            s.upstream_ca.client_config(),
            get("api.test", "/sni"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/sni");
        assert_eq!(proxy.seen()[0].target, "api.test:443");
        assert_eq!(origin.hits(), 1);
    });
}
