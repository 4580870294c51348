//! eBPF interception end to end, as root, for the other ways traffic arrives and leaves: governed
//! users going through the tunnel listener on purpose (HTTPS_PROXY, ALL_PROXY=socks5h), TLS
//! passed through in `tls.mode: sni-only`, and the agent chaining its dials through an upstream
//! proxy. Same world as `ebpf_e2e.rs` (see `iron_agent_tests::ebpf_world`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::TestCa;
use iron_agent_tests::config::{Tls, UpstreamProxy};
use iron_agent_tests::ebpf_world::{API_KEY, World, curl, curl_env, echoed_header};
use iron_agent_tests::netns::TestUser;
use iron_agent_tests::proxies::TestProxy;
use serde_json::Value;

/// Why these tests need root.
const WHY: &str = "eBPF programs, test users, a network namespace";

/// A tunnel setup record (method CONNECT, host `target`) for `uid`.
fn setup_of(uid: u32, target: &'static str) -> impl Fn(&Value) -> bool {
    move |a| a["method"] == "CONNECT" && a["host"] == target && a["uid"] == uid
}

#[test]
fn governed_users_through_the_tunnel_listener_keep_their_identity() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("e2e MITM CA");
    let cfg = world.config(&mitm).tunnel_listener();
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();
    let connect = format!("http://{}", agent.addr("tunnel"));
    let socks = format!("socks5h://{}", agent.addr("tunnel"));

    // HTTPS_PROXY (CONNECT) to an allowed host: the inner request is intercepted with the agent's
    // CA and gets the top-level pipeline's credential.
    let (rc, code, out) = curl_env(
        &u1,
        &[("HTTPS_PROXY", &connect)],
        &ca,
        &[],
        "https://api.test/tun",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert_eq!(echoed_header(&out, "x-api-key").as_deref(), Some(API_KEY));
    let setup = agent.audit_where(setup_of(u1.uid, "api.test:443"));
    assert_eq!(setup["action"], "allow");
    assert_eq!(setup["protocol"], "connect");
    assert_eq!(setup["user"], "iatest1");
    let inner = agent.audit_where(|a| a["path"] == "/tun");
    assert_eq!(inner["action"], "allow");
    assert_eq!(inner["uid"], u1.uid);
    assert_eq!(inner["user"], "iatest1");
    assert_eq!(inner["tunnel"]["protocol"], "connect");
    assert_eq!(inner["tunnel"]["target"], "api.test:443");
    // Not redirected: the workload chose the agent, so there is no original destination.
    assert!(inner.get("orig_dst").is_none(), "{inner}");

    // A host no pipeline allows: refused at setup, with the user's identity.
    let (rc, _, out) = curl_env(
        &u1,
        &[("HTTPS_PROXY", &connect)],
        &ca,
        &[],
        "https://denied.test/x",
    );
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("403"), "{out}");
    let denied = agent.audit_where(setup_of(u1.uid, "denied.test:443"));
    assert_eq!(denied["action"], "reject");
    assert_eq!(denied["status_code"], 403);

    // SOCKS5 by the second user: its own policy ("restricted": other.test only) decides, not the
    // top-level pipeline that allows api.test.
    let (rc, _, out) = curl_env(
        &u2,
        &[("ALL_PROXY", &socks)],
        &ca,
        &[],
        "https://api.test/s2",
    );
    assert_ne!(rc, 0, "the restricted policy must refuse api.test: {out}");
    let refused = agent.audit_where(setup_of(u2.uid, "api.test:443"));
    assert_eq!(refused["action"], "reject");
    assert_eq!(refused["protocol"], "socks5");
    assert_eq!(refused["policy"], "restricted");
    assert_eq!(refused["user"], "iatest2");
    let (rc, code, out) = curl_env(
        &u2,
        &[("ALL_PROXY", &socks)],
        &ca,
        &[],
        "https://other.test/s2ok",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert_eq!(
        echoed_header(&out, "x-api-key"),
        None,
        "policy injects nothing"
    );
    let inner = agent.audit_where(|a| a["path"] == "/s2ok");
    assert_eq!(inner["uid"], u2.uid);
    assert_eq!(inner["policy"], "restricted");
    assert_eq!(inner["tunnel"]["protocol"], "socks5");
    assert_eq!(inner["action"], "allow");

    // And the first user through SOCKS5 to the same host is allowed: the decision is per user.
    let (rc, code, out) = curl_env(
        &u1,
        &[("ALL_PROXY", &socks)],
        &ca,
        &[],
        "https://api.test/s1",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    assert_eq!(echoed_header(&out, "x-api-key").as_deref(), Some(API_KEY));
    let inner = agent.audit_where(|a| a["path"] == "/s1");
    assert_eq!(inner["uid"], u1.uid);
    assert_eq!(inner["tunnel"]["protocol"], "socks5");

    // Ports the redirect does not cover (here plain HTTP on 8080, EPERM when dialled directly)
    // are reachable through the tunnel, with the full pipeline on the inner request.
    let (rc, code, out) = curl_env(
        &u1,
        &[],
        &ca,
        &["-p", "-x", &connect],
        "http://api.test:8080/p8080",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert_eq!(echoed_header(&out, "x-api-key").as_deref(), Some(API_KEY));
    let inner = agent.audit_where(|a| a["path"] == "/p8080");
    assert_eq!(inner["uid"], u1.uid);
    assert_eq!(inner["tunnel"]["target"], "api.test:8080");
    assert!(
        !agent.logs().contains(API_KEY),
        "credential value leaked into logs"
    );
}

#[test]
fn sni_only_passes_tls_through_the_redirect() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    // No CA anywhere: the workload trusts only the origins' CA and sees their certificates.
    let cfg = world
        .config_with(Tls {
            mode: Some("sni-only".into()),
            ..Tls::default()
        })
        .tunnel_listener();
    let agent = world.start_agent(&cfg);
    let ca = world.origin_ca();
    let tls_for = |uid: u32, host: &'static str| {
        move |a: &Value| a["protocol"] == "tls" && a["host"] == host && a["uid"] == uid
    };

    let (rc, code, out) = curl(&u1, &ca, &["-4"], "https://api.test/sni");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    // Passed through untouched: the origin got the request as curl sent it, no credential.
    assert_eq!(echoed_header(&out, "x-api-key"), None, "{out}");
    let a = agent.audit_where(|a| a["protocol"] == "tls" && a["orig_dst"] == "10.231.0.2:443");
    assert_eq!(a["host"], "api.test");
    assert_eq!(a["uid"], u1.uid);
    assert_eq!(a["action"], "allow");
    assert_eq!(a["mode"], "sni-only");
    assert_eq!(a["sni"], "api.test");
    assert_eq!(a["orig_dst"], "10.231.0.2:443");
    assert_eq!(a["user"], "iatest1");
    assert_eq!(a["comm"], "curl");

    // IPv6 goes the same way.
    let (rc, code, out) = curl(&u1, &ca, &["-6"], "https://api.test/sni6");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    let a = agent.audit_where(|a| a["protocol"] == "tls" && a["orig_dst"] == "[fd31::2]:443");
    assert_eq!(a["host"], "api.test");
    assert_eq!(a["action"], "allow");

    // A denied SNI at its real address: the connection is closed before any TLS answer.
    let (rc, _, out) = curl(
        &u1,
        &ca,
        &["--resolve", "denied.test:443:10.231.0.2"],
        "https://denied.test/d",
    );
    assert_ne!(rc, 0, "{out}");
    let a = agent.audit_where(tls_for(u1.uid, "denied.test"));
    assert_eq!(a["action"], "reject");
    assert_eq!(a["status_code"], 403);
    assert_eq!(a["orig_dst"], "10.231.0.2:443");

    // An allowed SNI sent to another address: refused by the destination check.
    let (rc, _, out) = curl(
        &u1,
        &ca,
        &["--resolve", "other.test:443:10.231.0.3"],
        "https://other.test/front",
    );
    assert_ne!(rc, 0, "{out}");
    let a = agent.audit_where(|a| {
        a["protocol"] == "tls" && a["host"] == "other.test" && a["orig_dst"] == "10.231.0.3:443"
    });
    assert_eq!(a["action"], "reject");
    assert_eq!(a["reason"], "destination_mismatch");

    // The second user's policy judges its ClientHellos.
    let (rc, _, out) = curl(&u2, &ca, &[], "https://api.test/u2");
    assert_ne!(rc, 0, "{out}");
    let a = agent.audit_where(tls_for(u2.uid, "api.test"));
    assert_eq!(a["action"], "reject");
    assert_eq!(a["policy"], "restricted");
    let (rc, code, out) = curl(&u2, &ca, &[], "https://other.test/u2ok");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    let a = agent.audit_where(tls_for(u2.uid, "other.test"));
    assert_eq!(a["action"], "allow");
    assert_eq!(a["policy"], "restricted");

    // The tunnel's TLS branch passes through too, under the connecting user's policy.
    let socks = format!("socks5h://{}", agent.addr("tunnel"));
    let (rc, code, out) = curl_env(
        &u2,
        &[("ALL_PROXY", &socks)],
        &ca,
        &[],
        "https://other.test/tunneled",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    let a = agent.audit_where(|a| {
        a["protocol"] == "tls" && a["host"] == "other.test" && a["tunnel"]["protocol"] == "socks5"
    });
    assert_eq!(a["action"], "allow");
    assert_eq!(a["uid"], u2.uid);
    assert_eq!(a["policy"], "restricted");
    let (rc, _, out) = curl_env(
        &u2,
        &[("ALL_PROXY", &socks)],
        &ca,
        &[],
        "https://api.test/tunneled",
    );
    assert_ne!(rc, 0, "{out}");
    let a = agent.audit_where(setup_of(u2.uid, "api.test:443"));
    assert_eq!(a["action"], "reject");
    assert_eq!(a["policy"], "restricted");
}

#[test]
fn redirected_traffic_chains_through_an_upstream_proxy() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    // The proxy runs as root (not intercepted) and sends every tunnel to the origin on
    // 10.231.0.3, recording what the agent asked for.
    let proxy = world
        .rt
        .block_on(TestProxy::connect_to("10.231.0.3:443".parse().unwrap()));
    let mitm = TestCa::new("e2e MITM CA");
    // The default deny list covers loopback, where the proxy listens.
    let cfg = world.config(&mitm).with(|c| {
        c.proxy.upstream_deny_cidrs = Some(vec!["169.254.169.254/32".into()]);
        c.proxy.upstream_proxy = Some(UpstreamProxy {
            https_proxy: Some(format!("http://{}", proxy.addr)),
            ..UpstreamProxy::default()
        });
    });
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();

    let (rc, code, out) = curl(&u1, &ca, &["-4"], "https://api.test/chained");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert_eq!(echoed_header(&out, "x-api-key").as_deref(), Some(API_KEY));
    let seen: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        seen,
        ["api.test:443"],
        "the agent must dial through the proxy"
    );
    let a = agent.audit_where(|a| a["path"] == "/chained");
    assert_eq!(a["action"], "allow");
    assert_eq!(a["uid"], u1.uid);
    // The destination check still compares the workload's real destination with the name.
    assert_eq!(a["orig_dst"], "10.231.0.2:443");

    // Refused requests never reach the proxy.
    let (_, code, out) = curl(
        &u1,
        &ca,
        &["--resolve", "denied.test:443:10.231.0.2"],
        "https://denied.test/no",
    );
    assert_eq!(code, "403", "{out}");
    let (_, code, out) = curl(
        &u1,
        &ca,
        &["--resolve", "api.test:443:10.231.0.3"],
        "https://api.test/front",
    );
    assert_eq!(code, "403", "{out}");
    let a = agent.audit_where(|a| a["path"] == "/front");
    assert_eq!(a["reason"], "destination_mismatch");
    assert_eq!(proxy.count(), 1, "{:?}", proxy.seen());
}
