//! A KServe v2 infer response as the extraction guard reads and rewrites it: the scored
//! output's values out, the hardened values (and only the outputs the policy keeps) back in.
//! Everything else in the document passes through byte for byte.
//!
//! One pass with [`Scanner`] finds where the outputs, the scored output and its `data` sit
//! (a [`Layout`]). A response it does not take (anything unusual: repeated or escaped keys
//! and names, unreadable JSON) is read with serde_json instead, which says what is wrong, or
//! is re-serialised, and the layout is found in that.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Value;

use super::super::contract::Datatype;
use super::super::parse::{Scalar, Scanner};
use crate::extraction::{OutputPolicy, round_scaled};

/// Nesting the reader follows: serde_json's own limit, so whatever serde_json reads, the
/// reader can find the layout of once it is re-serialised.
const MAX_DEPTH: usize = 128;

/// A read v2 infer response with its scored output's values.
#[derive(Debug)]
pub struct V2Response<'b> {
    body: Cow<'b, [u8]>,
    layout: Layout,
    /// The scored output's values, row-major; rewrite them in place before
    /// [`V2Response::into_json`].
    pub scores: Vec<f32>,
}

/// Where the parts that may change sit in the body.
#[derive(Debug)]
struct Layout {
    /// The `outputs` array's `[` and `]`.
    open: usize,
    close: usize,
    /// Each output's span, and whether its datatype is an integer or boolean (a label).
    outputs: Vec<(Range<usize>, bool)>,
    /// Position of the scored output in `outputs`, and its `data` value's span.
    scored: usize,
    data: Range<usize>,
}

impl<'b> V2Response<'b> {
    /// Reads `body` as a v2 infer response whose output `name` is a floating-point tensor of
    /// `expected` values (flat or nested `data`). The error says what is wrong, for the log.
    pub fn parse(body: &'b [u8], name: &str, expected: usize) -> Result<Self, String> {
        if let Some((layout, scores)) = read(body, Pass::Upstream, name, expected) {
            return Ok(V2Response {
                body: Cow::Borrowed(body),
                layout,
                scores,
            });
        }
        let canonical = check(body, name, expected)?;
        let (layout, scores) = read(&canonical, Pass::Canonical, name, expected)
            .ok_or("the response has two outputs under the scored output's name")?;
        Ok(V2Response {
            body: Cow::Owned(canonical),
            layout,
            scores,
        })
    }

    /// The response with the scored output's `data` replaced by [`V2Response::scores`]
    /// (flat, at most `policy.decimals()` decimals) and, per `policy`, the other outputs it
    /// does not keep removed.
    pub fn into_json(self, policy: OutputPolicy) -> Vec<u8> {
        let (body, l) = (&self.body[..], &self.layout);
        let mut out = Vec::with_capacity(body.len() + 12 * self.scores.len());
        out.extend_from_slice(&body[..=l.open]);
        let kept = l
            .outputs
            .iter()
            .enumerate()
            .filter(|(i, (_, integer))| *i == l.scored || policy.keeps_other_output(*integer));
        for (n, (i, (span, _))) in kept.enumerate() {
            if n > 0 {
                out.push(b',');
            }
            if i == l.scored {
                out.extend_from_slice(&body[span.start..l.data.start]);
                write_scores(&mut out, &self.scores, policy.decimals());
                out.extend_from_slice(&body[l.data.end..span.end]);
            } else {
                out.extend_from_slice(&body[span.clone()]);
            }
        }
        out.extend_from_slice(&body[l.close..]);
        out
    }
}

/// How the reader takes escaped strings where it looks for a key, an output's name or its
/// datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The upstream's bytes: it gives up (serde_json decodes the escapes, and the decoded
    /// key may repeat one the reader took: `"out\u0070uts"` after `"outputs"`).
    Upstream,
    /// serde_json's re-serialisation: keys are unique, and an escaped text is none of the
    /// plain names the reader looks for.
    Canonical,
}

impl Pass {
    /// A string's text, `Some(None)` for an escaped one the pass passes over.
    fn text<'r>(self, s: &mut Scanner<'r>) -> Option<Option<&'r str>> {
        match self {
            Pass::Upstream => s.string().map(Some),
            Pass::Canonical => s.string_or_escaped(),
        }
    }
}

/// The one-pass reader: the layout and scores of a response of the usual shape, `None` for
/// anything else.
fn read(body: &[u8], pass: Pass, name: &str, expected: usize) -> Option<(Layout, Vec<f32>)> {
    let mut s = Scanner::over_text(std::str::from_utf8(body).ok()?);
    let mut found = None;
    s.eat(b'{')?;
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        let key = pass.text(&mut s)?;
        s.eat(b':')?;
        if key == Some("outputs") {
            if found.is_some() {
                return None;
            }
            found = Some(outputs(&mut s, pass, name, expected)?);
        } else {
            s.skip_value(MAX_DEPTH)?;
        }
        if !s.more(b'}')? {
            break;
        }
    }
    s.at_end().then_some(())?;
    found
}

/// The `outputs` array: exactly one output named `name`, of a floating-point datatype, with
/// `expected` numbers.
fn outputs(
    s: &mut Scanner<'_>,
    pass: Pass,
    name: &str,
    expected: usize,
) -> Option<(Layout, Vec<f32>)> {
    let open = s.position();
    s.eat(b'[')?;
    let mut outputs = Vec::new();
    let mut scored = None;
    let mut scores = Vec::with_capacity(expected);
    if s.peek()? == b']' {
        return None;
    }
    let close = loop {
        let start = s.position();
        let before = scores.len();
        let output = output(s, pass, &mut scores, expected)?;
        outputs.push((start..s.position(), output.integer));
        if output.name == Some(name) {
            if scored.is_some() || !output.floating {
                return None;
            }
            let (data, read) = output.data?;
            read.then_some(())?;
            scored = Some((outputs.len() - 1, data));
        } else {
            // Another output's numbers: not scores.
            scores.truncate(before);
        }
        let close = s.position();
        if !s.more(b']')? {
            break close;
        }
    };
    let (scored, data) = scored?;
    (scores.len() == expected).then_some(())?;
    let layout = Layout {
        open,
        close,
        outputs,
        scored,
        data,
    };
    Some((layout, scores))
}

/// What the reader learned of one output.
struct Output<'r> {
    /// Its name when it is a plain string.
    name: Option<&'r str>,
    integer: bool,
    floating: bool,
    /// Its `data` value's span, and whether that was read onto the scores: numbers or
    /// arrays of numbers, at most `expected` of them.
    data: Option<(Range<usize>, bool)>,
}

/// One output object, its `data` read onto the end of `scores` when it is numbers (the
/// caller keeps them only for the scored output); `None` when a field it reads is repeated.
fn output<'r>(
    s: &mut Scanner<'r>,
    pass: Pass,
    scores: &mut Vec<f32>,
    expected: usize,
) -> Option<Output<'r>> {
    let (mut name, mut datatype, mut data) = (None, None, None);
    s.eat(b'{')?;
    let mut more = s.peek()? != b'}';
    if !more {
        s.eat(b'}')?;
    }
    while more {
        let key = pass.text(s)?;
        s.eat(b':')?;
        match key {
            Some("name") if name.is_none() => name = Some(string_value(s, pass)?),
            Some("datatype") if datatype.is_none() => datatype = Some(string_value(s, pass)?),
            Some("data") if data.is_none() => {
                let start = s.position();
                let before = scores.len();
                let read = numbers(s, MAX_DEPTH, scores, before + expected).is_some();
                if !read {
                    scores.truncate(before);
                    s.rewind(start);
                    s.skip_value(MAX_DEPTH)?;
                }
                data = Some((start..s.position(), read));
            }
            Some("name" | "datatype" | "data") => return None,
            _ => s.skip_value(MAX_DEPTH)?,
        }
        more = s.more(b'}')?;
    }
    let datatype = datatype.flatten().and_then(Datatype::parse);
    Some(Output {
        name: name.flatten(),
        integer: datatype.is_some_and(is_integer),
        floating: matches!(
            datatype,
            Some(Datatype::Fp16 | Datatype::Fp32 | Datatype::Fp64)
        ),
        data,
    })
}

/// A field's text when its value is a string (see [`Pass::text`]), `Some(None)` for any
/// other value.
fn string_value<'r>(s: &mut Scanner<'r>, pass: Pass) -> Option<Option<&'r str>> {
    if s.peek()? == b'"' {
        pass.text(s)
    } else {
        s.skip_value(MAX_DEPTH).map(|()| None)
    }
}

/// A number or (possibly nested) arrays of numbers, appended to `out`; `None` on anything
/// else or once `out` would pass `max` values.
fn numbers(s: &mut Scanner<'_>, depth: usize, out: &mut Vec<f32>, max: usize) -> Option<()> {
    if s.peek()? != b'[' {
        let value = match s.number()? {
            Scalar::U(v) => v as f64,
            Scalar::I(v) => v as f64,
            Scalar::F(v) => v,
            _ => return None,
        };
        return (out.len() < max).then(|| out.push(value as f32));
    }
    s.eat(b'[')?;
    if s.peek()? == b']' {
        return s.eat(b']');
    }
    let depth = depth.checked_sub(1)?;
    loop {
        numbers(s, depth, out, max)?;
        if !s.more(b']')? {
            return Some(());
        }
    }
}

/// Appends `[v, …]`, each value as the JSON number a reader expects (0.12, not
/// 0.11999999731779099): with at most `decimals` decimals as that decimal (up to 6, within
/// `f32` precision), otherwise its shortest `f32` spelling; non-finite values as `null`.
fn write_scores(out: &mut Vec<u8>, scores: &[f32], decimals: Option<u8>) {
    out.push(b'[');
    for (i, &v) in scores.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let number = match decimals {
            Some(decimals) if decimals <= 6 => {
                round_scaled(f64::from(v), 10f64.powi(i32::from(decimals)))
            }
            _ => v.to_string().parse().unwrap_or(f64::from(v)),
        };
        if number.is_finite() {
            out.extend_from_slice(zmij::Buffer::new().format_finite(number).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
    }
    out.push(b']');
}

/// Whether a datatype is an integer or boolean one (a label, not a score).
fn is_integer(d: Datatype) -> bool {
    d != Datatype::Bytes && !matches!(d, Datatype::Fp16 | Datatype::Fp32 | Datatype::Fp64)
}

/// The serde_json reading of a response [`read`] did not take: the reason it cannot be
/// scored, or the document re-serialised (compact, keys unique).
fn check(body: &[u8], name: &str, expected: usize) -> Result<Vec<u8>, String> {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return Err("not a JSON object".into());
    };
    let outputs = doc
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("no `outputs` array")?;
    let output = outputs
        .iter()
        .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| format!("no output {name:?}"))?;
    let datatype = output
        .get("datatype")
        .and_then(Value::as_str)
        .and_then(Datatype::parse);
    if !matches!(
        datatype,
        Some(Datatype::Fp16 | Datatype::Fp32 | Datatype::Fp64)
    ) {
        return Err(format!("output {name:?} is not FP16, FP32 or FP64"));
    }
    let data = output
        .get("data")
        .ok_or_else(|| format!("output {name:?} has no JSON `data`"))?;
    let count =
        flat_count(data).ok_or_else(|| format!("output {name:?}: `data` is not numbers"))?;
    if count != expected {
        return Err(format!(
            "output {name:?} has {count} values, expected {expected}"
        ));
    }
    Ok(serde_json::to_vec(&doc).unwrap_or_default())
}

/// How many numbers a number or (nested) array of numbers holds; `None` for anything else.
fn flat_count(value: &Value) -> Option<usize> {
    match value {
        Value::Number(_) => Some(1),
        Value::Array(items) => items.iter().map(flat_count).sum(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(data: Value) -> Vec<u8> {
        json!({
            "model_name": "m", "id": "7",
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": [1.5, -2.0, 0.25]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": data},
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]},
                {"name": "embedding", "datatype": "BYTES", "shape": [1], "data": ["x"]}
            ]
        })
        .to_string()
        .into_bytes()
    }

    fn names(out: &Value) -> Vec<&str> {
        out["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect()
    }

    /// Parses `body` both ways (the one-pass reader, and the serde path's re-serialised
    /// document), checks they agree on the scores and on every policy's rewrite, and returns
    /// whether the one-pass reader took it.
    fn both_ways(body: &[u8], name: &str, expected: usize) -> bool {
        let canonical = check(body, name, expected).expect("serde path");
        let slow = read(&canonical, Pass::Canonical, name, expected)
            .unwrap_or_else(|| panic!("canonical layout: {}", String::from_utf8_lossy(&canonical)));
        let fast = read(body, Pass::Upstream, name, expected);
        let policies = [
            OutputPolicy::Full,
            OutputPolicy::Round { decimals: 2 },
            OutputPolicy::TopLabel,
        ];
        for policy in policies {
            let rewrite = |body: &[u8], layout: Layout, scores: &Vec<f32>| {
                let r = V2Response {
                    body: Cow::Borrowed(body),
                    layout,
                    scores: scores.iter().map(|v| v * 0.5).collect(),
                };
                serde_json::from_slice::<Value>(&r.into_json(policy)).expect("valid JSON out")
            };
            let (layout, scores) = read(&canonical, Pass::Canonical, name, expected).unwrap();
            let want = rewrite(&canonical, layout, &scores);
            if let Some((layout, scores)) = read(body, Pass::Upstream, name, expected) {
                assert_eq!(scores, slow.1, "{}", String::from_utf8_lossy(body));
                assert_eq!(rewrite(body, layout, &scores), want, "{policy:?}");
            }
        }
        fast.is_some()
    }

    #[test]
    fn reads_flat_or_nested_scores_and_rewrites_them() {
        for data in [json!([0.125, 0.8, 0.075]), json!([[0.125, 0.8, 0.075]])] {
            let body = body(data);
            let mut r = V2Response::parse(&body, "probabilities", 3).unwrap();
            assert!(
                matches!(r.body, Cow::Borrowed(_)),
                "the one-pass reader takes it"
            );
            assert_eq!(r.scores, vec![0.125, 0.8, 0.075]);
            r.scores = vec![0.12, 0.8, 0.07];
            let out: Value =
                serde_json::from_slice(&r.into_json(OutputPolicy::Round { decimals: 2 })).unwrap();
            assert_eq!(
                names(&out),
                ["probabilities", "label"],
                "logits and bytes dropped"
            );
            assert_eq!(out["outputs"][0]["data"], json!([0.12, 0.8, 0.07]));
            assert_eq!(out["outputs"][0]["shape"], json!([1, 3]));
            assert_eq!(out["id"], "7");
            assert_eq!(out["model_name"], "m");
        }
    }

    #[test]
    fn numbers_keep_their_short_spelling() {
        let spelled = |v: f32, decimals: Option<u8>| {
            let mut out = Vec::new();
            write_scores(&mut out, &[v], decimals);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(spelled(0.12, Some(2)), "[0.12]");
        assert_eq!(spelled(0.07, Some(2)), "[0.07]");
        assert_eq!(spelled(1.0, Some(0)), "[1.0]");
        assert_eq!(spelled(0.12, None), "[0.12]");
        assert_eq!(spelled(0.123_456_79, None), "[0.12345679]");
        assert_eq!(spelled(0.12, Some(9)), "[0.12]", "past f32 precision");
        assert_eq!(spelled(f32::NAN, Some(2)), "[null]");
    }

    #[test]
    fn full_policy_keeps_every_output() {
        let body = body(json!([0.1, 0.8, 0.1]));
        let r = V2Response::parse(&body, "probabilities", 3).unwrap();
        let out: Value = serde_json::from_slice(&r.into_json(OutputPolicy::Full)).unwrap();
        assert_eq!(out["outputs"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn everything_else_passes_byte_for_byte() {
        let body = br#"{ "id" : "a\"b\u00e9" ,"parameters":{"x":[1,{"y":null}],"z":true},
            "outputs" : [ {"datatype":"FP32","name":"p","data":[ 0.5 , 0.5 ],"shape":[1,2],"parameters":{}} ] }"#;
        let mut r = V2Response::parse(body, "p", 2).unwrap();
        r.scores = vec![0.25, 0.75];
        let out = String::from_utf8(r.into_json(OutputPolicy::Round { decimals: 2 })).unwrap();
        assert_eq!(
            out,
            r#"{ "id" : "a\"b\u00e9" ,"parameters":{"x":[1,{"y":null}],"z":true},
            "outputs" : [{"datatype":"FP32","name":"p","data":[0.25,0.75],"shape":[1,2],"parameters":{}} ] }"#
        );
    }

    /// The one-pass reader agrees with the serde path wherever it takes a response, and
    /// gives the unusual ones to it.
    #[test]
    fn the_one_pass_reader_agrees_with_serde() {
        let taken: [&[u8]; 6] = [
            &body(json!([0.125, 0.8, 0.075])),
            &body(json!([[0.125], [0.8], [0.075]])),
            br#"{"outputs":[{"name":"probabilities","datatype":"FP64","data":[1,-2,3e-2]}],"model_version":"1"}"#,
            b"\n{\t\"outputs\" : [ { \"data\" : [ 0.1 , 0.2 , 0.7 ] , \"name\" : \"probabilities\" , \"datatype\" : \"FP16\" } ] }\r\n",
            br#"{"outputs":[{},{"name":7,"datatype":null,"data":{"a":"\n"}},{"name":"probabilities","datatype":"FP32","data":[0.1,0.2,0.7]}]}"#,
            br#"{"a":{"outputs":1},"outputs":[{"name":"probabilities","datatype":"FP32","data":[[[0.1,0.2,0.7]]]}]}"#,
        ];
        // Nesting up to serde_json's own limit.
        let deep = format!(
            r#"{{"parameters":{}1{},"outputs":[{{"name":"probabilities","datatype":"FP32","data":[0.1,0.2,0.7]}}]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        for body in taken.into_iter().chain([deep.as_bytes()]) {
            assert!(
                both_ways(body, "probabilities", 3),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let given_up: [&[u8]; 7] = [
            // Repeated keys: serde_json keeps the last.
            br#"{"outputs":[],"outputs":[{"name":"probabilities","datatype":"FP32","data":[0.1,0.2,0.7]}]}"#,
            br#"{"outputs":[{"name":"probabilities","datatype":"FP32","data":[9,9,9],"data":[0.1,0.2,0.7]}]}"#,
            br#"{"outputs":[{"name":"logits","datatype":"FP32","datatype":"INT64","data":[1]},{"name":"probabilities","datatype":"FP32","data":[0.1,0.2,0.7]}]}"#,
            // Escaped keys, names and datatypes: `out\u0070uts` is a second `outputs`, and
            // the last one is what a consumer's parser reads.
            br#"{"outputs":[{"name":"probabilities","datatype":"FP32","data":[0.1,0.2,0.7]}],"out\u0070uts":[{"name":"probabilities","datatype":"FP32","data":[0.3,0.3,0.4]}]}"#,
            br#"{"outputs":[{"name":"probabilities","datatype":"FP32","d\u0061ta":[0.3,0.3,0.4],"data":[0.1,0.2,0.7]}]}"#,
            br#"{"outputs":[{"name":"prob\u0061bilities","datatype":"FP32","data":[0.1,0.2,0.7]}]}"#,
            br#"{"outputs":[{"name":"a\"b","datatype":"FP32","data":[1]},{"name":"probabilities","datatype":"FP32","data":[0.1,0.2,0.7]}],"x\ny":1}"#,
        ];
        for body in given_up {
            assert!(
                !both_ways(body, "probabilities", 3),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(V2Response::parse(body, "probabilities", 3).is_ok());
        }
    }

    proptest::proptest! {
        /// Whatever a damaged response looks like, the one-pass reader takes it only when
        /// serde_json reads it too, and then agrees with it; nothing panics.
        #[test]
        fn takes_nothing_serde_refuses(
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..4),
            cut in 0usize..400,
        ) {
            let mut body = body(json!([[0.125, 0.8, 0.075]]));
            for (at, byte) in edits {
                let at = at % body.len();
                body[at] = byte;
            }
            body.truncate(body.len() - cut.min(body.len() / 8));
            let parsed = V2Response::parse(&body, "probabilities", 3);
            if read(&body, Pass::Upstream, "probabilities", 3).is_some() {
                proptest::prop_assert!(check(&body, "probabilities", 3).is_ok());
                proptest::prop_assert!(both_ways(&body, "probabilities", 3));
            }
            if let Ok(r) = parsed {
                let out = r.into_json(OutputPolicy::TopLabel);
                proptest::prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_score() {
        let cases: [(Vec<u8>, &str, usize); 9] = [
            (b"not json".to_vec(), "probabilities", 3),
            (b"[1, 2]".to_vec(), "probabilities", 3),
            (br#"{"error": "boom"}"#.to_vec(), "probabilities", 3),
            (body(json!([0.1, 0.9])), "probabilities", 3),
            (body(json!([0.1, 0.8, 0.05, 0.05])), "probabilities", 3),
            (body(json!([0.1, "0.8", 0.1])), "probabilities", 3),
            (body(json!([0.1, 0.8, 0.1])), "label", 1),
            (
                br#"{"outputs":[{"name":"p","datatype":"FP32","data":[1,2,3]}]} x"#.to_vec(),
                "p",
                3,
            ),
            // Two outputs under the scored name: which one the consumer reads is unclear.
            (
                br#"{"outputs":[{"name":"p","datatype":"FP32","data":[1]},{"name":"p","datatype":"FP32","data":[2]}]}"#
                    .to_vec(),
                "p",
                1,
            ),
        ];
        for (body, name, expected) in cases {
            assert!(
                V2Response::parse(&body, name, expected).is_err(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        let no_data = json!({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2],
            "parameters": {"binary_data_size": 8}}]});
        assert!(V2Response::parse(no_data.to_string().as_bytes(), "p", 2).is_err());
    }
}
