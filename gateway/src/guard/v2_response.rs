//! An HTTP backend's KServe v2 infer response as the extraction guard reads and rewrites
//! it: the scored output's values out, the hardened values (and only the outputs the
//! policy keeps) back in. Anything else in the document passes unchanged.

use serde_json::{Map, Value};

use modelgate_plugins::extraction::OutputPolicy;
use modelgate_plugins::schema::Datatype;

/// A parsed v2 infer response with its scored output's values.
#[derive(Debug)]
pub struct V2Response {
    doc: Map<String, Value>,
    /// Position of the scored output in `outputs`.
    scored: usize,
    /// The scored output's values, row-major; rewrite them in place before
    /// [`V2Response::into_json`].
    pub scores: Vec<f32>,
}

impl V2Response {
    /// Reads `body` as a v2 infer response whose output `name` is a floating-point tensor of
    /// `expected` values (flat or nested `data`). The error says what is wrong, for the log.
    pub fn parse(body: &[u8], name: &str, expected: usize) -> Result<V2Response, String> {
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
            return Err("not a JSON object".into());
        };
        let outputs = doc
            .get("outputs")
            .and_then(Value::as_array)
            .ok_or("no `outputs` array")?;
        let scored = outputs
            .iter()
            .position(|o| o.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("no output {name:?}"))?;
        let output = &outputs[scored];
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
        let mut scores = Vec::with_capacity(expected);
        flatten(data, &mut scores, expected)
            .ok_or_else(|| format!("output {name:?}: `data` is not {expected} numbers"))?;
        if scores.len() != expected {
            return Err(format!(
                "output {name:?} has {} values, expected {expected}",
                scores.len()
            ));
        }
        Ok(V2Response {
            doc,
            scored,
            scores,
        })
    }

    /// The response with the scored output's `data` replaced by [`V2Response::scores`]
    /// (flat) and, per `policy`, the other outputs it does not keep removed.
    pub fn into_json(mut self, policy: OutputPolicy) -> Vec<u8> {
        let decimals = policy.decimals();
        let data = Value::Array(self.scores.iter().map(|&v| json_f32(v, decimals)).collect());
        if let Some(Value::Array(outputs)) = self.doc.get_mut("outputs") {
            if let Some(Value::Object(output)) = outputs.get_mut(self.scored) {
                output.insert("data".into(), data);
            }
            let mut index = 0;
            outputs.retain(|o| {
                let keep = index == self.scored || policy.keeps_other_output(is_integer(o));
                index += 1;
                keep
            });
        }
        serde_json::to_vec(&self.doc).unwrap_or_default()
    }
}

/// Appends the numbers of a (possibly nested) array to `out`; `None` on anything else or
/// past `max` values.
fn flatten(value: &Value, out: &mut Vec<f32>, max: usize) -> Option<()> {
    match value {
        Value::Number(n) if out.len() < max => {
            out.push(n.as_f64()? as f32);
            Some(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out, max)),
        _ => None,
    }
}

/// An output whose datatype is an integer or boolean (a label, not a score).
fn is_integer(output: &Value) -> bool {
    let datatype = output
        .get("datatype")
        .and_then(Value::as_str)
        .and_then(Datatype::parse);
    matches!(datatype, Some(d) if d != Datatype::Bytes && !matches!(d, Datatype::Fp16 | Datatype::Fp32 | Datatype::Fp64))
}

/// `v` as the JSON number a reader expects (0.12, not 0.11999999731779099): a value with at
/// most `decimals` decimals as that decimal (up to 6, within `f32` precision), any other
/// with its shortest `f32` spelling.
fn json_f32(v: f32, decimals: Option<u8>) -> Value {
    let number = match decimals {
        Some(decimals) if decimals <= 6 => {
            let scale = 10f64.powi(i32::from(decimals));
            (f64::from(v) * scale).round() / scale
        }
        _ => v.to_string().parse().unwrap_or(f64::from(v)),
    };
    serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
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

    #[test]
    fn reads_flat_or_nested_scores_and_rewrites_them() {
        for data in [json!([0.125, 0.8, 0.075]), json!([[0.125, 0.8, 0.075]])] {
            let mut r = V2Response::parse(&body(data), "probabilities", 3).unwrap();
            assert_eq!(r.scores, vec![0.125, 0.8, 0.075]);
            r.scores = vec![0.12, 0.8, 0.07];
            let out: Value =
                serde_json::from_slice(&r.into_json(OutputPolicy::Round { decimals: 2 })).unwrap();
            let names: Vec<&str> = out["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                ["probabilities", "label"],
                "logits and bytes dropped"
            );
            assert_eq!(out["outputs"][0]["data"], json!([0.12, 0.8, 0.07]));
            assert_eq!(out["id"], "7");
            assert_eq!(out["model_name"], "m");
        }
    }

    #[test]
    fn numbers_keep_their_short_spelling() {
        assert_eq!(json_f32(0.12, Some(2)), json!(0.12));
        assert_eq!(json_f32(0.07, Some(2)), json!(0.07));
        assert_eq!(json_f32(1.0, Some(0)), json!(1.0));
        assert_eq!(json_f32(0.12, None), json!(0.12));
        assert_eq!(json_f32(0.123_456_79, None), json!(0.123_456_79));
        assert_eq!(json_f32(0.12, Some(9)), json!(0.12), "past f32 precision");
    }

    #[test]
    fn full_policy_keeps_every_output() {
        let r = V2Response::parse(&body(json!([0.1, 0.8, 0.1])), "probabilities", 3).unwrap();
        let out: Value = serde_json::from_slice(&r.into_json(OutputPolicy::Full)).unwrap();
        assert_eq!(out["outputs"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn refuses_what_it_cannot_score() {
        let cases: [(Vec<u8>, &str, usize); 7] = [
            (b"not json".to_vec(), "probabilities", 3),
            (b"[1, 2]".to_vec(), "probabilities", 3),
            (br#"{"error": "boom"}"#.to_vec(), "probabilities", 3),
            (body(json!([0.1, 0.9])), "probabilities", 3),
            (body(json!([0.1, 0.8, 0.05, 0.05])), "probabilities", 3),
            (body(json!([0.1, "0.8", 0.1])), "probabilities", 3),
            (body(json!([0.1, 0.8, 0.1])), "label", 1),
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
