//! `iron-agent status`: what is installed, attached and governed, and the program counters.
//! Read-only: it never adopts the pins (adopting rewrites the programs' config).

use std::path::PathBuf;

use agent_common::harden::{HARDEN_PROGRAMS, HardenKind};
use agent_common::{PIN_LINKS_SUBDIR, PROGRAMS, ProgKind};
use serde_json::{Value, json};

use super::InstallError;
use super::layout::{BINARY, CONFIG, Layout, MANIFEST, UNIT};
use super::manifest::Manifest;
use super::system;
use crate::config::intercept::{Identities, InterceptConfig};
use crate::config::{self};
use crate::ebpf;

#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// Config to read the identities and pin directory from (default: the installed one).
    pub config: Option<PathBuf>,
    pub json: bool,
    pub root: Option<PathBuf>,
}

/// Collects the status as JSON (also the source of the human-readable form).
pub fn collect(opts: &StatusOptions) -> Result<Value, InstallError> {
    let layout = Layout::new(opts.root.clone());
    let manifest = Manifest::load(&layout)?;
    let config_path = opts.config.clone().unwrap_or_else(|| layout.path(CONFIG));
    let (intercept, config_error) = if config_path.exists() {
        match config::load(&config_path) {
            Ok(c) => (Some(c.intercept), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, Some("not found".to_string()))
    };
    let pin_dir = intercept
        .as_ref()
        .map_or_else(|| InterceptConfig::default().pin_dir, |i| i.pin_dir.clone());

    let links_dir = pin_dir.join(PIN_LINKS_SUBDIR);
    let links: Vec<Value> = PROGRAMS
        .iter()
        .map(|(name, kind)| {
            let hook = match kind {
                ProgKind::SockCreate => "cgroup sock_create".to_string(),
                ProgKind::SockAddr => format!("cgroup {}", name.trim_start_matches("iron_")),
                ProgKind::SockOps => "cgroup sock_ops".to_string(),
            };
            json!({"program": name, "hook": hook, "pinned": links_dir.join(name).exists()})
        })
        .collect();
    let attached = ebpf::is_installed(&pin_dir);
    let (counters, counters_error) = if attached {
        match ebpf::pinned_counters(&pin_dir) {
            Ok(c) => (
                Some(
                    c.iter()
                        .map(|(k, v)| (format!("{k:?}"), Value::from(v)))
                        .collect::<serde_json::Map<_, _>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let pins_readable = !pin_dir.exists() || std::fs::read_dir(&pin_dir).is_ok();
    let (lsm, hardening) = hardening_json(&pin_dir, attached);

    Ok(json!({
        "installed": manifest.is_some(),
        "manifest": layout.path(MANIFEST),
        "unit_file": layout.path(UNIT).exists().then(|| layout.path(UNIT)),
        "binary": layout.path(BINARY).exists().then(|| layout.path(BINARY)),
        "systemd_running": system::systemd_running(),
        "service": system::unit_state(),
        "config": config_path,
        "config_error": config_error,
        "pin_dir": pin_dir,
        "pin_dir_present": pin_dir.exists(),
        "pins_readable": pins_readable,
        "attached": attached,
        "links": links,
        "counters": counters,
        "counters_error": counters_error,
        "lsm": lsm,
        "hardening": hardening,
        "intercept": intercept.as_ref().map(intercept_json),
    }))
}

/// The BPF LSM state. With an installation pinned it is what the pins say (the `iron_lsm_*`
/// links exist exactly when the agent attached them): a fresh probe could disagree with what is
/// enforced. Without one, whether the agent could use the LSM.
fn lsm_json(pin_dir: &std::path::Path, attached: bool) -> Value {
    use ebpf::harden::{LSM_PROTECTIONS, LsmState};
    if attached {
        return if ebpf::harden::lsm_attached(pin_dir) {
            json!({"active": true, "source": "pins"})
        } else {
            json!({
                "active": false,
                "source": "pins",
                "reason": "the LSM programs are not attached (the agent's startup log says why)",
                "off": LSM_PROTECTIONS,
            })
        };
    }
    match LsmState::detect() {
        LsmState::Active => json!({"active": true, "source": "probe"}),
        LsmState::Inactive(why) => {
            json!({"active": false, "source": "probe", "reason": why, "off": LSM_PROTECTIONS})
        }
    }
}

/// The BPF LSM state and each hardening program (issue 11) with whether it is attached.
fn hardening_json(pin_dir: &std::path::Path, attached: bool) -> (Value, Value) {
    let lsm = lsm_json(pin_dir, attached);
    let links_dir = pin_dir.join(PIN_LINKS_SUBDIR);
    let programs: Vec<Value> = HARDEN_PROGRAMS
        .iter()
        .map(|(name, kind)| {
            let hook = match kind {
                HardenKind::Bind => "cgroup bind".to_string(),
                HardenKind::Setsockopt => "cgroup setsockopt".to_string(),
                HardenKind::SkbEgress => "cgroup skb egress".to_string(),
                HardenKind::Lsm(h) => format!("lsm {h}"),
            };
            json!({"program": name, "hook": hook, "pinned": links_dir.join(name).exists()})
        })
        .collect();
    let counters = if attached {
        ebpf::harden::pinned_counters(pin_dir).ok().map(|c| {
            c.iter()
                .map(|(k, v)| (format!("{k:?}"), Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
        })
    } else {
        None
    };
    let protected = attached
        .then(|| ebpf::protect::pinned_count(pin_dir).ok())
        .flatten();
    (
        lsm,
        json!({"programs": programs, "counters": counters, "protected_inodes": protected}),
    )
}

fn ids_json(ids: &Identities) -> Value {
    json!({"uids": ids.uids, "users": ids.users, "cgroups": ids.cgroups})
}

fn intercept_json(i: &InterceptConfig) -> Value {
    json!({
        "mode": format!("{:?}", i.mode).to_lowercase(),
        "default": format!("{:?}", i.default).to_lowercase(),
        "governed": ids_json(&i.governed),
        "exempt": ids_json(&i.exempt),
        "deny": ids_json(&i.deny),
        "policies": i.policies.iter().enumerate().map(|(n, p)| json!({
            "name": p.name.clone().unwrap_or_else(|| format!("policies[{n}]")),
            "identities": ids_json(&p.identities()),
            "transforms": p.transforms.len(),
        })).collect::<Vec<_>>(),
    })
}

pub fn status(opts: &StatusOptions) -> Result<(), InstallError> {
    let v = collect(opts)?;
    if opts.json {
        println!("{v:#}");
        return Ok(());
    }
    print!("{}", human(&v));
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn human(v: &Value) -> String {
    let mut out = Vec::new();
    let mut line = |k: &str, val: String| out.push((k.to_string(), val));
    line(
        "installed",
        if v["installed"] == true {
            format!("yes ({})", s(&v["manifest"]))
        } else {
            "no".into()
        },
    );
    line("unit", s(&v["unit_file"]));
    line(
        "service",
        if v["systemd_running"] == true {
            s(&v["service"])
        } else {
            "systemd not running".into()
        },
    );
    let cfg_err = if v["config_error"].is_null() {
        String::new()
    } else {
        format!(" ({})", s(&v["config_error"]))
    };
    line("config", format!("{}{cfg_err}", s(&v["config"])));
    line("attached", attached_text(v));
    for p in v["links"].as_array().into_iter().flatten() {
        line("intercept", program_text(p));
    }
    hardening_lines(v, &mut line);
    intercept_lines(v, &mut line);
    if let Some(c) = v["counters"].as_object() {
        line("counters", counters_text(c));
    } else if !v["counters_error"].is_null() {
        line(
            "counters",
            format!("unreadable: {}", s(&v["counters_error"])),
        );
    }
    out.iter()
        .map(|(k, val)| format!("{k:<12} {val}\n"))
        .collect()
}

fn counters_text(c: &serde_json::Map<String, Value>) -> String {
    let text: Vec<String> = c.iter().map(|(k, n)| format!("{k}={n}")).collect();
    text.join(" ")
}

/// `name (hook): attached` for a program of the `links` or `hardening.programs` list.
fn program_text(p: &Value) -> String {
    let state = if p["pinned"] == true {
        "attached"
    } else {
        "not attached"
    };
    format!("{} ({}): {state}", s(&p["program"]), s(&p["hook"]))
}

/// The `bpf lsm` line, one line per hardening program, and the hardening counters.
fn hardening_lines(v: &Value, line: &mut impl FnMut(&str, String)) {
    let lsm = &v["lsm"];
    line(
        "bpf lsm",
        match (lsm["active"] == true, lsm["source"] == "pins") {
            (true, true) => "active (LSM programs attached)".to_string(),
            (true, false) => "usable (nothing attached)".to_string(),
            (false, _) => format!(
                "inactive: {}; protections off: {}",
                s(&lsm["reason"]),
                s(&lsm["off"])
            ),
        },
    );
    for p in v["hardening"]["programs"].as_array().into_iter().flatten() {
        line("hardening", program_text(p));
    }
    if let Some(c) = v["hardening"]["counters"].as_object() {
        line("hardening #", counters_text(c));
    }
    if let Some(n) = v["hardening"]["protected_inodes"].as_u64() {
        line(
            "protected",
            format!("{n} inodes governed tasks cannot open (CA key, state directory)"),
        );
    }
}

/// The intercept mode, identities and policies.
fn intercept_lines(v: &Value, line: &mut impl FnMut(&str, String)) {
    let Some(i) = v["intercept"].as_object() else {
        return;
    };
    line(
        "mode",
        format!(
            "{} (default for other uids: {})",
            s(&i["mode"]),
            s(&i["default"])
        ),
    );
    for k in ["governed", "exempt", "deny"] {
        line(k, ids_text(&i[k]));
    }
    for p in i["policies"].as_array().into_iter().flatten() {
        line(
            "policy",
            format!(
                "{}: {} ({} transforms)",
                s(&p["name"]),
                ids_text(&p["identities"]),
                s(&p["transforms"])
            ),
        );
    }
}

/// The `attached` line: whether the programs are attached through the pins.
fn attached_text(v: &Value) -> String {
    let pinned: Vec<String> = v["links"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| l["pinned"] == true)
                .map(|l| s(&l["program"]))
                .collect()
        })
        .unwrap_or_default();
    if v["attached"] == true {
        format!(
            "yes: {} programs attached through pins in {}",
            pinned.len(),
            s(&v["pin_dir"])
        )
    } else if v["pins_readable"] == false {
        format!("unknown: cannot read {} (run as root)", s(&v["pin_dir"]))
    } else if v["pin_dir_present"] == true {
        format!(
            "no: {} is incomplete ({} of {} link pins)",
            s(&v["pin_dir"]),
            pinned.len(),
            PROGRAMS.len()
        )
    } else {
        format!("no: nothing pinned at {}", s(&v["pin_dir"]))
    }
}

fn ids_text(ids: &Value) -> String {
    let mut parts = Vec::new();
    for k in ["uids", "users", "cgroups"] {
        if let Some(a) = ids[k].as_array().filter(|a| !a.is_empty()) {
            parts.push(format!(
                "{k}: {}",
                a.iter().map(s).collect::<Vec<_>>().join(",")
            ));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_output_names_each_program_and_the_lsm_state_from_the_pins() {
        let v = json!({
            "attached": true,
            "pin_dir": "/sys/fs/bpf/iron-agent",
            "links": [
                {"program": "iron_connect4", "hook": "cgroup connect4", "pinned": true},
                {"program": "iron_sock_ops", "hook": "cgroup sock_ops", "pinned": false},
            ],
            "lsm": {"active": false, "source": "pins", "reason": "not attached", "off": "self-protection"},
            "hardening": {"programs": [
                {"program": "iron_lsm_bpf", "hook": "lsm bpf", "pinned": false},
            ]},
        });
        let text = human(&v);
        assert!(
            text.contains("intercept    iron_connect4 (cgroup connect4): attached\n"),
            "{text}"
        );
        assert!(
            text.contains("intercept    iron_sock_ops (cgroup sock_ops): not attached\n"),
            "{text}"
        );
        assert!(
            text.contains("bpf lsm      inactive: not attached; protections off: self-protection"),
            "{text}"
        );
        assert!(
            text.contains("hardening    iron_lsm_bpf (lsm bpf): not attached"),
            "{text}"
        );
        let mut on = v.clone();
        on["lsm"] = json!({"active": true, "source": "pins"});
        assert!(human(&on).contains("bpf lsm      active (LSM programs attached)"));
    }
}
