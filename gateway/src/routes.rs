//! Which route a request path belongs to, and what it asks of it.

use std::collections::HashMap;

use modelgate_plugins::{Code, Denial};

/// What a model path (`/v2/models/{m}[/versions/{v}][/op]`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOp {
    Metadata,
    Ready,
    Infer,
    /// Any other sub-path: only HTTP backends serve these.
    Other,
}

/// Where a path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/v2/health/live`
    ServerLive,
    /// `/v2/health/ready`
    ServerReady,
    /// `/v2`
    ServerMetadata,
    /// A model endpoint of route `route`; `prefix_len` bytes of the path name the model.
    Model {
        route: usize,
        op: ModelOp,
        version: Option<&'a str>,
        prefix_len: usize,
    },
    /// A `path_prefix` route; `prefix_len` bytes of the path are the prefix.
    Prefix { route: usize, prefix_len: usize },
}

/// Model names and path prefixes → route index. Built once per config snapshot.
#[derive(Debug, Default)]
pub struct RouteIndex {
    by_model: HashMap<String, usize>,
    /// Longest prefix first.
    prefixes: Vec<(String, usize)>,
}

impl RouteIndex {
    /// Indexes `(model, path_prefix)` per route, in route order.
    pub fn new<'a>(routes: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Self {
        let mut index = RouteIndex::default();
        for (i, (model, prefix)) in routes.into_iter().enumerate() {
            if let Some(m) = model {
                index.by_model.insert(m.to_string(), i);
            }
            if let Some(p) = prefix {
                index.prefixes.push((p.to_string(), i));
            }
        }
        index
            .prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        index
    }

    /// Resolves a request path (without query). Paths with dot segments or encoded
    /// separators are refused (400) so a prefix match can never be walked out of.
    pub fn resolve<'p>(&self, path: &'p str) -> Result<Target<'p>, Denial> {
        check_path(path)?;
        match path {
            "/v2" | "/v2/" => return Ok(Target::ServerMetadata),
            "/v2/health/live" => return Ok(Target::ServerLive),
            "/v2/health/ready" => return Ok(Target::ServerReady),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/v2/models/") {
            return self.model_target(path, rest);
        }
        for (prefix, route) in &self.prefixes {
            if path.starts_with(prefix.as_str())
                && (path.len() == prefix.len()
                    || matches!(path.as_bytes()[prefix.len()], b'/' | b':'))
            {
                return Ok(Target::Prefix {
                    route: *route,
                    prefix_len: prefix.len(),
                });
            }
        }
        Err(Denial::new(Code::RouteNotFound, "no route for this path"))
    }

    fn model_target<'p>(&self, path: &'p str, rest: &'p str) -> Result<Target<'p>, Denial> {
        // One spelling per endpoint: backends that decode `%69nfer`, fold `//` or ignore a
        // trailing `/` would otherwise receive an unchecked infer request.
        if rest.contains(['%', ';']) || rest.ends_with('/') || rest.contains("//") {
            return Err(Denial::new(
                Code::BadRequest,
                "model paths must be canonical: no percent-encoding, ';', empty segments or trailing '/'",
            ));
        }
        let (model, mut tail) = rest.split_once('/').map_or((rest, ""), |(m, t)| (m, t));
        let Some(&route) = self.by_model.get(model) else {
            return Err(Denial::new(Code::ModelNotFound, "unknown model"));
        };
        let mut version = None;
        if let Some(after) = tail.strip_prefix("versions/") {
            let (v, t) = after.split_once('/').map_or((after, ""), |(v, t)| (v, t));
            version = Some(v);
            tail = t;
        }
        let op = match tail {
            "" => ModelOp::Metadata,
            t if t.eq_ignore_ascii_case("ready") => ModelOp::Ready,
            t if t.eq_ignore_ascii_case("infer") => ModelOp::Infer,
            _ => ModelOp::Other,
        };
        let prefix_len = "/v2/models/".len() + model.len();
        debug_assert!(path.len() >= prefix_len);
        Ok(Target::Model {
            route,
            op,
            version,
            prefix_len,
        })
    }
}

fn check_path(path: &str) -> Result<(), Denial> {
    let bad = || {
        Denial::new(
            Code::BadRequest,
            "path has dot segments or encoded separators",
        )
    };
    if !path.starts_with('/') || path.contains('\\') {
        return Err(bad());
    }
    let encoded = |code: &[u8]| {
        path.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1..].eq_ignore_ascii_case(code))
    };
    if path.contains('%') && [b"2e", b"2f", b"5c", b"00"].iter().any(|c| encoded(*c)) {
        return Err(bad());
    }
    if path.contains("/.") && path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> RouteIndex {
        RouteIndex::new([
            (Some("digits"), None),
            (None, Some("/echo")),
            (Some("remote"), Some("/echo/deep")),
        ])
    }

    #[test]
    fn resolves_server_and_model_paths() {
        let i = index();
        assert_eq!(i.resolve("/v2/health/live").unwrap(), Target::ServerLive);
        assert_eq!(i.resolve("/v2").unwrap(), Target::ServerMetadata);
        let t = i.resolve("/v2/models/digits/infer").unwrap();
        assert_eq!(
            t,
            Target::Model {
                route: 0,
                op: ModelOp::Infer,
                version: None,
                prefix_len: 17
            }
        );
        let t = i.resolve("/v2/models/digits/versions/1/ready").unwrap();
        assert_eq!(
            t,
            Target::Model {
                route: 0,
                op: ModelOp::Ready,
                version: Some("1"),
                prefix_len: 17
            }
        );
        let t = i.resolve("/v2/models/digits").unwrap();
        assert!(matches!(
            t,
            Target::Model {
                op: ModelOp::Metadata,
                ..
            }
        ));
        let t = i.resolve("/v2/models/remote/explain").unwrap();
        assert!(matches!(
            t,
            Target::Model {
                route: 2,
                op: ModelOp::Other,
                ..
            }
        ));
        assert_eq!(
            i.resolve("/v2/models/nope/infer").unwrap_err().code,
            Code::ModelNotFound
        );
    }

    #[test]
    fn prefixes_match_whole_segments_longest_first() {
        let i = index();
        assert_eq!(
            i.resolve("/echo").unwrap(),
            Target::Prefix {
                route: 1,
                prefix_len: 5
            }
        );
        assert_eq!(
            i.resolve("/echo/x").unwrap(),
            Target::Prefix {
                route: 1,
                prefix_len: 5
            }
        );
        assert_eq!(
            i.resolve("/echo/deep/x").unwrap(),
            Target::Prefix {
                route: 2,
                prefix_len: 10
            }
        );
        // TF-Serving verbs: `/v1/models/m:predict` is under the prefix `/v1/models/m`.
        assert_eq!(
            i.resolve("/echo:predict").unwrap(),
            Target::Prefix {
                route: 1,
                prefix_len: 5
            }
        );
        assert_eq!(i.resolve("/echoes").unwrap_err().code, Code::RouteNotFound);
        assert_eq!(i.resolve("/").unwrap_err().code, Code::RouteNotFound);
    }

    #[test]
    fn model_paths_have_one_spelling() {
        let i = index();
        for p in [
            "/v2/models/digits/%69nfer",
            "/v2/models/digits/infer/",
            "/v2/models/digits//infer",
            "/v2/models/digits/infer;x",
            "/v2/models/digits/versions/1/infer/",
        ] {
            assert_eq!(i.resolve(p).unwrap_err().code, Code::BadRequest, "{p}");
        }
        let t = i.resolve("/v2/models/digits/INFER").unwrap();
        assert!(matches!(
            t,
            Target::Model {
                op: ModelOp::Infer,
                ..
            }
        ));
    }

    #[test]
    fn refuses_traversal() {
        let i = index();
        for p in [
            "/echo/../admin",
            "/echo/./x",
            "/echo/%2e%2e/x",
            "/echo/%2E./x",
            "/echo%2Fx",
            "/echo%5cx",
            "/echo/%00",
            "/echo\\x",
            "/echo/..",
        ] {
            assert_eq!(i.resolve(p).unwrap_err().code, Code::BadRequest, "{p}");
        }
        for p in ["/echo/.well-known", "/echo/a%20b", "/echo/x..y", "/echo/%2"] {
            assert!(i.resolve(p).is_ok(), "{p}");
        }
    }
}
