//! The default `upstream_deny_cidrs` (key absent) also covers the unspecified ranges and
//! link-local (issue 11 item 11): a request naming `0.0.0.0` would otherwise reach this host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::client::get;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, http_request};

#[test]
fn unspecified_and_link_local_are_denied_by_default() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        // Listening on every address, so `0.0.0.0:port` reaches it when nothing denies it.
        let origin = Origin::start_on("0.0.0.0:0".parse().unwrap(), OriginKind::Http, None).await;
        let dir = tempfile::tempdir().unwrap();
        let mitm = TestCa::new("mitm");
        let (c, k) = mitm.write(dir.path());
        let host = format!("0.0.0.0:{}", origin.port());

        // Control: with an empty deny list the address is dialled and answers.
        let open = AgentConfig::loopback(&c, &k);
        let agent = Agent::with(&open).start();
        let r = http_request(agent.addr("http"), get(&host, "/open")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(origin.hits(), 1);
        drop(agent);

        // Key absent: the defaults apply and nothing is dialled.
        let closed = AgentConfig::loopback(&c, &k).with(|c| c.proxy.upstream_deny_cidrs = None);
        let agent = Agent::with(&closed).start();
        let r = http_request(agent.addr("http"), get(&host, "/closed")).await;
        assert_eq!(r.status, 502);
        assert_eq!(origin.hits(), 1, "a denied address must never be dialled");
        let a = agent.audit_where(|a| a["path"] == "/closed");
        let err = a["error"].as_str().unwrap();
        assert!(err.contains("in 0.0.0.0/8"), "{err}");
        for (host, prefix) in [
            ("169.254.10.1:80", "169.254.0.0/16"),
            ("[fe80::1]:80", "fe80::/10"),
            ("[::]:80", "::/128"),
        ] {
            let r = http_request(agent.addr("http"), get(host, "/ll")).await;
            assert_eq!(r.status, 502, "{host}");
            let a = agent.audit_where(|a| a["host"] == host);
            let err = a["error"].as_str().unwrap();
            assert!(err.contains(&format!("in {prefix}")), "{host}: {err}");
        }
    });
}
