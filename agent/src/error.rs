//! Error text shared by modules that report a library error with its causes.

/// `a: b: c` from an error and its sources, skipping a source whose text the message already
/// ends with (hyper and the AWS SDK often repeat the cause in the outer message).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.ends_with(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn joins_sources_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(super::chain(&e), "outer: inner");
        let e = Repeats(std::io::Error::other("inner"));
        assert_eq!(super::chain(&e), "outer: inner");
    }
}
