//! User names ↔ uids from the passwd database (`/etc/passwd`), for `intercept` identities, the
//! jail's target account and the audit record's `user` field. Read without NSS: the agent
//! governs local accounts.
//!
//! The database is read at startup into a [`Users`] table and looked up in memory on the
//! request path: a request never waits for file I/O. An unknown uid schedules a re-read on the
//! blocking pool (at most every [`REFRESH_AFTER`]), so accounts created after start show up in
//! later records; `reload` is what a config reload calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

const PASSWD: &str = "/etc/passwd";
/// Minimum time between two re-reads triggered by unknown uids.
pub const REFRESH_AFTER: Duration = Duration::from_secs(10);

/// A passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One snapshot of the passwd database.
#[derive(Debug, Default)]
pub struct Table {
    accounts: Vec<Account>,
    by_uid: HashMap<u32, Arc<str>>,
}

impl Table {
    pub fn parse(text: &str) -> Self {
        let accounts: Vec<Account> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(Account {
                    name: (*f.first()?).to_string(),
                    uid: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                    home: f.get(5).map_or_else(String::new, |h| (*h).to_string()),
                })
            })
            .collect();
        let mut by_uid = HashMap::new();
        for a in &accounts {
            // First entry wins, like getpwuid(3) on a files database.
            by_uid
                .entry(a.uid)
                .or_insert_with(|| Arc::<str>::from(a.name.as_str()));
        }
        Self { accounts, by_uid }
    }

    /// Reads the database (blocking file I/O: startup, reload or the blocking pool only).
    pub fn read() -> Self {
        Self::parse(&std::fs::read_to_string(PASSWD).unwrap_or_default())
    }

    pub fn uid_of(&self, name: &str) -> Option<u32> {
        self.by_name(name).map(|a| a.uid)
    }

    pub fn by_name(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    pub fn by_uid(&self, uid: u32) -> Option<&Account> {
        self.accounts.iter().find(|a| a.uid == uid)
    }

    pub fn name_of(&self, uid: u32) -> Option<Arc<str>> {
        self.by_uid.get(&uid).cloned()
    }
}

/// The uid of a user name, reading the database now (startup only: blocking file I/O).
pub fn uid_of(name: &str) -> Option<u32> {
    Table::read().uid_of(name)
}

/// The live table: swapped whole on reload, read without locks.
pub struct Users {
    table: ArcSwap<Table>,
    refreshing: Arc<AtomicBool>,
    last_refresh: Mutex<Instant>,
}

impl Users {
    /// Reads the database now (startup).
    pub fn load() -> Arc<Self> {
        Arc::new(Self::from_table(Table::read()))
    }

    pub fn from_table(table: Table) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            refreshing: Arc::new(AtomicBool::new(false)),
            last_refresh: Mutex::new(Instant::now()),
        }
    }

    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Re-reads the database (blocking; a reload runs it on the blocking pool).
    pub fn reload(&self) {
        self.table.store(Arc::new(Table::read()));
        *self.last_refresh.lock() = Instant::now();
    }

    /// The user name of `uid`, from memory. An unknown uid schedules a background re-read.
    pub fn name_of(self: &Arc<Self>, uid: u32) -> Option<Arc<str>> {
        let found = self.table.load().name_of(uid);
        if found.is_none() {
            self.refresh_in_background();
        }
        found
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.last_refresh.lock().elapsed() < REFRESH_AFTER {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        handle.spawn_blocking(move || {
            me.reload();
            me.refreshing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines() {
        let t = Table::parse(
            "root:x:0:0:root:/root:/bin/bash\n# c\napp:x:1001:1001::/home/app:/bin/sh\nbad\ndup:x:1001:5::/:/bin/sh\n",
        );
        assert_eq!(t.name_of(1001).as_deref(), Some("app"));
        assert_eq!(t.name_of(0).as_deref(), Some("root"));
        assert_eq!(t.uid_of("dup"), Some(1001));
        assert_eq!(t.by_name("app").map(|a| a.home.as_str()), Some("/home/app"));
        assert_eq!(t.by_uid(0).map(|a| a.gid), Some(0));
        assert_eq!(t.name_of(7), None);
    }

    #[tokio::test]
    async fn unknown_uid_refreshes_in_background_without_blocking() {
        let users = Arc::new(Users::from_table(Table::parse("a:x:5:5::/:/bin/sh\n")));
        assert_eq!(users.name_of(5).as_deref(), Some("a"));
        // Within REFRESH_AFTER of the last read: no re-read.
        assert_eq!(users.name_of(0), None);
        assert!(!users.refreshing.load(Ordering::Acquire));
        // Later: an unknown uid schedules one re-read of the real database, which knows root.
        *users.last_refresh.lock() = Instant::now() - REFRESH_AFTER - Duration::from_secs(1);
        assert_eq!(
            users.name_of(0),
            None,
            "answered from memory, not after a read"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while users.snapshot().name_of(0).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(users.name_of(0).as_deref(), Some("root"));
    }
}
