//! Upstream addresses: `http://host:port[/base-path]`.

/// A parsed upstream URL. Only plain `http` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix prepended to forwarded paths; empty or starting with `/`, no trailing `/`.
    pub base_path: String,
}

impl serde::Serialize for UpstreamUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("http://{}{}", self.authority(), self.base_path))
    }
}

impl UpstreamUrl {
    /// `host:port` as a socket address string (`[::1]:80` for IPv6).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses an upstream URL; the error says what is wrong with it.
pub fn parse_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let invalid = |why: &str| format!("invalid URL {text:?}: {why}");
    let rest = if let Some(rest) = text.strip_prefix("http://") {
        rest
    } else if text.starts_with("https://") {
        return Err(invalid(
            "https upstreams are not supported yet; use http://",
        ));
    } else {
        return Err(invalid("expected http://host:port"));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(invalid("query and fragment are not allowed"));
    }
    if authority.contains('@') {
        return Err(invalid("user info is not allowed"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !host_ok {
        return Err(invalid("host has characters that are not allowed"));
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(invalid("port must be 1-65535")),
            Ok(p) => p,
        },
    };
    Ok(UpstreamUrl {
        host: host.to_string(),
        port,
        base_path: path.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let u = parse_upstream_url("http://127.0.0.1:9000/base/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("127.0.0.1", 9000, "/base")
        );
        assert_eq!(u.authority(), "127.0.0.1:9000");
        let u = parse_upstream_url("http://[::1]:81").unwrap();
        assert_eq!(u.authority(), "[::1]:81");
        assert_eq!(parse_upstream_url("http://backend").unwrap().port, 80);
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "127.0.0.1:9000",
            "https://x:1",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://u@h:1",
            "http://h:1/?q",
            "http://h h:1",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad} accepted");
        }
    }
}
