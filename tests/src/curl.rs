//! Runs the system `curl` with a clean proxy environment (bounded in time).

use std::time::Duration;

/// What curl printed and how it ended.
#[derive(Debug)]
pub struct CurlOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `curl -sS <args>` with only the proxy variables in `env` set.
pub async fn curl(args: &[&str], env: &[(&str, &str)]) -> CurlOut {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "15"]).args(args);
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("curl timed out")
        .expect("run curl");
    CurlOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
