//! User names ↔ uids from the passwd database (`/etc/passwd`), for `intercept` identities and
//! the audit record's `user` field. Read without NSS: the agent governs local accounts.

use std::collections::HashMap;
use std::sync::OnceLock;

fn table() -> &'static HashMap<u32, String> {
    static T: OnceLock<HashMap<u32, String>> = OnceLock::new();
    T.get_or_init(|| parse(&std::fs::read_to_string("/etc/passwd").unwrap_or_default()))
}

fn parse(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// The uid of a user name, re-reading the database (accounts may be created after start).
pub fn uid_of(name: &str) -> Option<u32> {
    parse(&std::fs::read_to_string("/etc/passwd").ok()?)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(u, _)| u)
}

/// The user name of a uid (cached table, then a fresh read for accounts added since).
pub fn name_of(uid: u32) -> Option<String> {
    if let Some(n) = table().get(&uid) {
        return Some(n.clone());
    }
    parse(&std::fs::read_to_string("/etc/passwd").ok()?).remove(&uid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_passwd_lines() {
        let t = super::parse(
            "root:x:0:0:root:/root:/bin/bash\n# c\napp:x:1001:1001::/home/app:/bin/sh\nbad\n",
        );
        assert_eq!(t.get(&1001).map(String::as_str), Some("app"));
        assert_eq!(t.get(&0).map(String::as_str), Some("root"));
        assert_eq!(t.len(), 2);
    }
}
