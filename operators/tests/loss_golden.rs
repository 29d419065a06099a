//! Golden test of the PPO objective against torch reimplementations of EasyR1's
//! `compute_policy_loss` / `compute_kl` (`tests/golden/policy/make_loss_golden.py`): loss,
//! metrics and the gradient d loss / d log_probs from candle's `backward()` on a `Var` agree
//! within 1e-6 (relative to the magnitude where it exceeds 1).
#![allow(clippy::print_stderr, clippy::unwrap_used)]

use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use shareflow_operators::policy::{
    KlConfig, KlPenalty, PpoConfig, kl_penalty_full, masked_mean, ppo_loss,
};

const GOLDEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/golden/policy/loss_golden.json"
));

const TOL: f64 = 1e-6;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as usize)
        .collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(v), shape, &Device::Cpu).expect("tensor")
}

/// Max scaled error; asserts it is within `TOL`.
fn check(what: &str, got: f64, want: f64) -> f64 {
    let err = (got - want).abs() / want.abs().max(1.0);
    assert!(
        err <= TOL,
        "{what}: got {got:e}, torch {want:e} (scaled error {err:e})"
    );
    err
}

fn check_vec(what: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| check(&format!("{what}[{i}]"), g.into(), w.into()))
        .fold(0.0, f64::max)
}

#[test]
fn ppo_loss_matches_torch_golden() {
    let golden: Value = serde_json::from_str(GOLDEN).expect("golden json");
    let mut worst_value = 0.0f64;
    let mut worst_grad = 0.0f64;
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() >= 9);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let shape = dims(&case["shape"]);
        let c = &case["config"];
        let kl = match &c["kl"] {
            Value::Null => None,
            kl => Some(KlConfig {
                penalty: kl["penalty"]
                    .as_str()
                    .expect("penalty")
                    .parse::<KlPenalty>()
                    .expect("known penalty"),
                coef: kl["coef"].as_f64().expect("coef"),
            }),
        };
        let cfg = PpoConfig {
            clip_ratio_low: c["clip_ratio_low"].as_f64().expect("low"),
            clip_ratio_high: c["clip_ratio_high"].as_f64().expect("high"),
            clip_ratio_dual: c["clip_ratio_dual"].as_f64().expect("dual"),
            kl,
        };
        let lp = Var::from_tensor(&tensor(&case["log_probs"], &shape)).expect("var");
        let old = tensor(&case["old_log_probs"], &shape);
        let adv = tensor(&case["advantages"], &dims(&case["advantages_shape"]));
        let mask = tensor(&case["mask"], &shape);
        let reference = match &case["ref_log_probs"] {
            Value::Null => None,
            r => Some(tensor(r, &shape)),
        };
        let terms = ppo_loss(lp.as_tensor(), &old, &adv, &mask, reference.as_ref(), &cfg)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = &case["expected"];
        let num = |k: &str| e[k].as_f64().unwrap_or_else(|| panic!("{name}: {k}"));
        let loss: f64 = terms.loss.to_scalar::<f32>().expect("scalar").into();
        for (k, got) in [
            ("loss", loss),
            ("pg_loss", terms.pg_loss),
            ("pg_clipfrac_higher", terms.pg_clipfrac_higher),
            ("pg_clipfrac_lower", terms.pg_clipfrac_lower),
            ("ppo_kl", terms.ppo_kl),
            ("entropy_loss", terms.entropy_loss),
        ] {
            worst_value = worst_value.max(check(&format!("{name}: {k}"), got, num(k)));
        }
        match (terms.kl_loss, e["kl_loss"].as_f64()) {
            (Some(got), Some(want)) => {
                worst_value = worst_value.max(check(&format!("{name}: kl_loss"), got, want));
            }
            (None, None) => {}
            other => panic!("{name}: kl_loss presence differs: {other:?}"),
        }
        let grads = terms.loss.backward().expect("backward");
        let g = grads
            .get(lp.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient reached log_probs"))
            .flatten_all()
            .and_then(|g| g.to_vec1::<f32>())
            .expect("grad values");
        let want = floats(&e["grad_log_probs"]);
        worst_grad = worst_grad.max(check_vec(&format!("{name}: grad"), &g, &want));
        if name != "all_masked" {
            assert!(g.iter().any(|&x| x != 0.0), "{name}: gradient is all zero");
        }
    }
    eprintln!(
        "ppo_loss vs torch: {} cases, worst scaled error values {worst_value:e}, gradients {worst_grad:e}",
        cases.len()
    );
}

#[test]
fn full_kl_matches_torch_golden() {
    let golden: Value = serde_json::from_str(GOLDEN).expect("golden json");
    let case = &golden["full_kl"];
    let shape = dims(&case["shape"]);
    let coef = case["coef"].as_f64().expect("coef");
    let logits = Var::from_tensor(&tensor(&case["logits"], &shape)).expect("var");
    let ref_logits = tensor(&case["ref_logits"], &shape);
    let mask = tensor(&case["mask"], &shape[..2]);
    let kld = kl_penalty_full(logits.as_tensor(), &ref_logits).expect("kl full");
    assert_eq!(kld.dims(), &shape[..2]);
    let e = &case["expected"];
    let kl_vals = kld
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("kld");
    let w1 = check_vec("full kld", &kl_vals, &floats(&e["kld"]));
    let kl_loss = masked_mean(&kld, &mask).expect("masked mean");
    let w2 = check(
        "full kl_loss",
        kl_loss.to_scalar::<f32>().expect("scalar").into(),
        e["kl_loss"].as_f64().expect("kl_loss"),
    );
    let grads = kl_loss
        .affine(coef, 0.0)
        .and_then(|l| l.backward())
        .expect("backward");
    let g = grads
        .get(logits.as_tensor())
        .expect("gradient reaches the logits")
        .flatten_all()
        .and_then(|g| g.to_vec1::<f32>())
        .expect("grad");
    let w3 = check_vec("full grad", &g, &floats(&e["grad_logits"]));
    eprintln!(
        "full KL vs torch: worst scaled error {:e}",
        w1.max(w2).max(w3)
    );
}

#[test]
fn with_kl_loss_equals_configured_kl() {
    // The manual path used for `full` gives the same loss as the configured path.
    let golden: Value = serde_json::from_str(GOLDEN).expect("golden json");
    let case = golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "kl_low_var_kl")
        .expect("case");
    let shape = dims(&case["shape"]);
    let lp = tensor(&case["log_probs"], &shape);
    let old = tensor(&case["old_log_probs"], &shape);
    let adv = tensor(&case["advantages"], &dims(&case["advantages_shape"]));
    let mask = tensor(&case["mask"], &shape);
    let reference = tensor(&case["ref_log_probs"], &shape);
    let kl = KlConfig {
        penalty: KlPenalty::LowVarKl,
        coef: 0.04,
    };
    let cfg = PpoConfig {
        kl: Some(kl),
        ..PpoConfig::default()
    };
    let a = ppo_loss(&lp, &old, &adv, &mask, Some(&reference), &cfg).expect("configured");
    let kld = shareflow_operators::policy::kl_penalty(&lp, &reference, kl.penalty).expect("kld");
    let b = ppo_loss(&lp, &old, &adv, &mask, None, &PpoConfig::default())
        .and_then(|t| t.with_kl_loss(&kld, &mask, kl.coef))
        .expect("manual");
    assert_eq!(
        a.loss.to_scalar::<f32>().expect("a"),
        b.loss.to_scalar::<f32>().expect("b")
    );
    assert_eq!(a.kl_loss, b.kl_loss);
}
