#!/usr/bin/env python3
"""Train the bundled `digits` classifier and export it as a hand-built ONNX graph.

Deterministic: fixed seeds, fixed float formatting; running it twice produces
byte-identical output files.

Usage:
    pip install -r models/requirements.txt   # scikit-learn onnx onnxruntime numpy
    python3 models/train_digits.py

Writes (next to this script):
    digits.onnx           the model (standard ONNX ops only, opset 13, IR 8)
    digits.json           metadata + training statistics
    digits_holdout.json   the held-out rows (raw 0..16 integers) and labels
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
HIDDEN = 64
N_FEATURES = 64
N_CLASSES = 10
FEATURE_MAX = 16.0
OPSET = 13
IR_VERSION = 8
OUT_DIR = os.path.dirname(os.path.abspath(__file__))


def r6(x):
    """Round to 6 decimals as a plain Python float (stable JSON output)."""
    v = round(float(x), 6)
    return 0.0 if v == 0 else v  # normalise -0.0


def build_onnx(clf):
    """Build the ONNX graph by hand from the MLP's weights.

    input [batch,64] raw 0..16
      -> MatMul(W1 / 16) -> Add(b1) -> Relu
      -> MatMul(W2) -> Add(b2) -> Softmax(axis=1) = probabilities [batch,10]
                                -> ArgMax(axis=1, keepdims=0) = label [batch] (int64)

    The MLP was trained on pixels scaled by 1/16; that scaling is folded into W1.
    Scaling by a power of two is exact in float32, so x @ (W1 / 16) gives bit for bit
    what (x / 16) @ W1 gives, with one operation less per inference.
    """
    w1, w2 = (np.asarray(w, dtype=np.float32) for w in clf.coefs_)
    b1, b2 = (np.asarray(b, dtype=np.float32) for b in clf.intercepts_)
    assert w1.shape == (N_FEATURES, HIDDEN) and w2.shape == (HIDDEN, N_CLASSES)
    assert FEATURE_MAX == 16.0, "the fold below is exact for a power of two only"
    w1_scaled = w1 * np.float32(1.0 / FEATURE_MAX)

    inits = [
        numpy_helper.from_array(w1_scaled, "W1"),
        numpy_helper.from_array(b1, "B1"),
        numpy_helper.from_array(w2, "W2"),
        numpy_helper.from_array(b2, "B2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "W1"], ["h1_mm"], name="fc1_matmul"),
        helper.make_node("Add", ["h1_mm", "B1"], ["h1_pre"], name="fc1_bias"),
        helper.make_node("Relu", ["h1_pre"], ["h1"], name="fc1_relu"),
        helper.make_node("MatMul", ["h1", "W2"], ["logits_mm"], name="fc2_matmul"),
        helper.make_node("Add", ["logits_mm", "B2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", N_CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="modelgate-train_digits",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    model.doc_string = (
        "8x8 digit classifier (sklearn load_digits), MLP 64-%d(ReLU)-10. "
        "Input: raw pixel values 0..16 as float32 [batch,64]." % HIDDEN
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    np.random.seed(SEED)
    digits = load_digits()
    X = digits.data.astype(np.float64)  # values 0..16
    y = digits.target.astype(np.int64)
    assert X.shape == (1797, N_FEATURES)

    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=SEED
    )

    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        activation="relu",
        solver="adam",
        alpha=1e-4,
        max_iter=500,
        random_state=SEED,
    )
    clf.fit(X_tr / FEATURE_MAX, y_tr)  # converges in ~370 adam epochs
    assert list(clf.classes_) == list(range(N_CLASSES))

    sk_proba = clf.predict_proba(X_te / FEATURE_MAX)
    sk_pred = clf.predict(X_te / FEATURE_MAX)
    acc = float(np.mean(sk_pred == y_te))
    print(f"held-out accuracy: {acc:.3f}")
    assert acc >= 0.95, f"accuracy too low: {acc}"

    # ---- export + verify with onnxruntime ----
    model = build_onnx(clf)
    onnx_path = os.path.join(OUT_DIR, "digits.onnx")
    with open(onnx_path, "wb") as f:
        f.write(model.SerializeToString())

    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_proba, ort_label = sess.run(
        ["probabilities", "label"], {"input": X_te.astype(np.float32)}
    )
    max_diff = float(np.max(np.abs(ort_proba - sk_proba)))
    print(f"onnx vs sklearn max |proba diff|: {max_diff:.2e}")
    assert ort_label.dtype == np.int64 and ort_label.shape == (len(X_te),)
    assert max_diff < 1e-4, f"probabilities differ: {max_diff}"
    assert np.array_equal(ort_label, sk_pred), "labels differ between onnx and sklearn"
    onnx_acc = float(np.mean(ort_label == y_te))
    print(f"onnx held-out accuracy: {onnx_acc:.3f}")
    # batch of 1 (symbolic batch dim) must work too
    p1, l1 = sess.run(None, {"input": X_te[:1].astype(np.float32)})
    assert p1.shape == (1, N_CLASSES) and l1.shape == (1,)

    # ---- training statistics (raw 0..16 feature space) ----
    mean = X_tr.mean(axis=0)
    std = X_tr.std(axis=0)  # population std (ddof=0); 0 for constant pixels
    centroids = np.stack([X_tr[y_tr == c].mean(axis=0) for c in range(N_CLASSES)])
    dists = np.sqrt(((X_tr[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    nearest = dists.min(axis=1)
    q = np.quantile(nearest, [0.5, 0.9, 0.99])

    meta = {
        "name": "digits",
        "version": "1",
        "platform": "onnx",
        "max_batch_size": 64,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, N_CLASSES]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
        "class_labels": [str(c) for c in range(N_CLASSES)],
        "feature_range": {"min": 0.0, "max": FEATURE_MAX},
        "training": {
            "rows": int(len(X_tr)),
            "feature_mean": [r6(v) for v in mean],
            "feature_std": [r6(v) for v in std],
            "class_centroids": [[r6(v) for v in row] for row in centroids],
            "centroid_distance": {
                "p50": r6(q[0]),
                "p90": r6(q[1]),
                "p99": r6(q[2]),
                "max": r6(nearest.max()),
            },
        },
        "heldout_accuracy": r6(onnx_acc),
    }
    with open(os.path.join(OUT_DIR, "digits.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")

    # Hand-formatted (one row per line) so diffs stay readable; valid JSON,
    # keys in sorted order.
    rows = ",\n".join("    " + json.dumps([int(v) for v in row]) for row in X_te)
    labels = json.dumps([int(v) for v in y_te])
    with open(os.path.join(OUT_DIR, "digits_holdout.json"), "w") as f:
        f.write('{\n  "labels": %s,\n  "rows": [\n%s\n  ]\n}\n' % (labels, rows))

    print(f"wrote {onnx_path}, digits.json, digits_holdout.json "
          f"(train rows {len(X_tr)}, held-out rows {len(X_te)})")


if __name__ == "__main__":
    main()
