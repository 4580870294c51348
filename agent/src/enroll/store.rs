//! The steps of `init` that touch the network or the disk: the enrollment call through the
//! agent's own client, the token file, the foreground config, the service.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use super::client::{self, Enrolled};
use super::{EnrollError, InitOptions, Plan, say};
use crate::config::Config;
use crate::install::layout::{CONFIG, Layout};
use crate::install::manifest::{Kind, Manifest};
use crate::install::{self, InstallError, InstallOptions};
use crate::mint::TokenHttp;
use crate::resolve::Resolver;
use crate::secrets::SecretValue;
use crate::upstream::{Connector, DenyList, UpstreamProxies};

/// The enrollment call, through a client built like the agent's own (the sync call's): the
/// configured upstream resolver, `proxy.upstream_proxy` and the proxy environment variables,
/// TLS verified against the system roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`.
pub fn enroll_with(
    cfg: &Config,
    url: &str,
    token: &SecretValue,
    name: &str,
) -> Result<Enrolled, EnrollError> {
    let setup = |what: &str, reason: String| EnrollError::Unreachable {
        url: url.to_string(),
        reason: format!("{what}: {reason}"),
    };
    let upstream = match &cfg.dns.upstream_resolver {
        Some(a) => Some(
            a.socket_addr()
                .map_err(|e| setup("dns.upstream_resolver", e))?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EnrollError::io("starting the runtime", e))?;
    rt.block_on(async {
        let resolver = Resolver::new(upstream).map_err(|e| setup("resolver", e.to_string()))?;
        let proxies =
            UpstreamProxies::from_env_and_config(&cfg.proxy.upstream_proxy).map_err(|errs| {
                let why: Vec<String> = errs.iter().map(ToString::to_string).collect();
                setup("upstream proxy", why.join("; "))
            })?;
        let tls =
            crate::tls::upstream_client_config().map_err(|e| setup("TLS roots", e.to_string()))?;
        let connector = Connector::new(Arc::new(resolver), DenyList::new(Vec::new()), tls)
            .with_upstream_proxies(proxies);
        client::enroll(&TokenHttp::new(&connector), url, token, name).await
    })
}

/// Writes a secret file readable by its owner only: created 0600 (never briefly wider),
/// flushed, then renamed into place. The parent directory is created 0700 if missing.
pub fn write_secret(path: &Path, value: &SecretValue) -> Result<(), EnrollError> {
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        fs::create_dir_all(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| EnrollError::io(format!("creating {}", dir.display()), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        EnrollError::io(format!("writing {}", path.display()), e)
    })
}

/// `--no-service`: the config (0600) in the state directory and, for the generated config, a
/// CA next to it (kept if one is there).
pub fn write_foreground(plan: &Plan, path: &Path, generated: bool) -> Result<(), EnrollError> {
    let dir = plan.layout.path(&plan.state_dir);
    if generated && !(dir.join("ca.crt").exists() && dir.join("ca.key").exists()) {
        let ca = crate::tls::generate_ca(&crate::tls::GenerateCaOptions {
            outdir: dir.clone(),
            name: "iron-agent CA".into(),
            expiry_hours: 2160,
            alg: crate::tls::CaAlgorithm::EcdsaP256,
        })?;
        say(format!(
            "CA: generated {} (0644) and {} (0600)",
            ca.cert_path.display(),
            ca.key_path.display()
        ));
    }
    install::manifest::write_file(path, plan.text.as_bytes(), 0o600)?;
    say(format!(
        "config: wrote {} (managed mode: control plane {}, token file {})",
        path.display(),
        plan.url,
        plan.token_file.display()
    ));
    say(format!(
        "next: start the agent with: iron-agent run --config {}",
        path.display()
    ));
    Ok(())
}

/// The service, as `iron-agent install --config FILE` sets it up, with the managed config; the
/// token file is recorded in install's manifest so `uninstall` removes it.
pub fn install_service(plan: &Plan, opts: &InitOptions) -> Result<(), EnrollError> {
    let tmp = std::env::temp_dir().join(format!("iron-agent-init-{}.yaml", std::process::id()));
    install::manifest::write_file(&tmp, plan.text.as_bytes(), 0o600)?;
    let res = install::install(
        &InstallOptions {
            config: Some(tmp.clone()),
            govern_users: Vec::new(),
            govern_cgroups: Vec::new(),
            allow: Vec::new(),
            no_start: opts.no_start,
            root: opts.root.clone(),
        },
        &crate::app::preflight::install_host_check,
    );
    let _ = fs::remove_file(&tmp);
    res?;
    let mut m = Manifest::load(&plan.layout)?.unwrap_or(Manifest {
        version: 1,
        ..Manifest::default()
    });
    m.record(&plan.token_file, Kind::File, false);
    m.save(&plan.layout)?;
    say(format!(
        "managed mode: the service syncs with {} using the token in {}",
        plan.url,
        plan.token_file.display()
    ));
    Ok(())
}

/// The service's config may be replaced only if absent or written by an earlier install (as
/// `install --config` requires); checked before the enrollment token is spent.
pub fn check_config_replaceable(layout: &Layout) -> Result<(), EnrollError> {
    let real = layout.path(CONFIG);
    match fs::metadata(&real) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EnrollError::io(format!("reading {}", real.display()), e)),
        Ok(_) => {}
    }
    let ours = Manifest::load(layout)?.is_some_and(|m| m.created(Path::new(CONFIG)));
    if ours {
        Ok(())
    } else {
        Err(InstallError::Refused(format!(
            "config: {} exists and was not written by iron-agent install; move it away first (or pass it as --config to start from it)",
            real.display()
        ))
        .into())
    }
}
