//! Golden test of the optimizer against `torch.optim.AdamW` + `clip_grad_norm_` driven as
//! EasyR1 drives them (`tests/golden/policy/make_optim_golden.py`): parameters, moments and
//! reported gradient norms after every step agree within 1e-6 relative; a non-finite step is
//! skipped; the checkpoint state resumes exactly; gradient accumulation over two half
//! micro-batches equals the full batch.
#![allow(clippy::print_stderr, clippy::unwrap_used)]

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};
use serde_json::Value;
use shareflow_operators::policy::{
    GradAccumulator, OptimConfig, OptimState, Optimizer, PolicyError, PpoConfig, ppo_loss,
};

const GOLDEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/golden/policy/optim_golden.json"
));

const TOL: f64 = 1e-6;
const NAMES: [&str; 3] = ["a", "b", "c"];

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

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
}

/// Largest `|got - want| / max(|want|, 1e-3)`, asserted <= `tol`.
fn rel_check(what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - f64::from(w)).abs() / f64::from(w).abs().max(1e-3);
        assert!(
            err <= tol,
            "{what}[{i}]: got {g:e}, torch {w:e} (rel {err:e})"
        );
        worst = worst.max(err);
    }
    worst
}

fn config(c: &Value) -> OptimConfig {
    let f = |k: &str| c[k].as_f64().expect(k);
    OptimConfig {
        lr: f("lr"),
        betas: (
            c["betas"][0].as_f64().expect("b1"),
            c["betas"][1].as_f64().expect("b2"),
        ),
        eps: f("eps"),
        weight_decay: f("weight_decay"),
        max_grad_norm: c["max_grad_norm"].as_f64(),
    }
}

struct Scenario<'a> {
    name: &'a str,
    cfg: OptimConfig,
    shapes: Vec<Vec<usize>>,
    init: Vec<Vec<f32>>,
    steps: &'a [Value],
}

fn scenarios(golden: &Value) -> Vec<Scenario<'_>> {
    golden["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| Scenario {
            name: s["name"].as_str().expect("name"),
            cfg: config(&s["config"]),
            shapes: NAMES.iter().map(|n| dims(&s["shapes"][n])).collect(),
            init: NAMES.iter().map(|n| floats(&s["init"][n])).collect(),
            steps: s["steps"].as_array().expect("steps"),
        })
        .collect()
}

fn make_vars(shapes: &[Vec<usize>], init: &[Vec<f32>]) -> Vec<Var> {
    shapes
        .iter()
        .zip(init)
        .map(|(s, v)| Var::from_slice(v, s.as_slice(), &Device::Cpu).expect("var"))
        .collect()
}

fn optimizer(vars: &[Var], cfg: OptimConfig) -> Optimizer {
    Optimizer::new(
        NAMES
            .iter()
            .map(|n| n.to_string())
            .zip(vars.iter().cloned()),
        cfg,
    )
    .expect("optimizer")
}

fn grad_store(step: &Value, vars: &[Var], shapes: &[Vec<usize>]) -> GradStore {
    let mut store = GradStore::default();
    for ((name, var), shape) in NAMES.iter().zip(vars).zip(shapes) {
        let Some(g) = step["grads"].get(*name) else {
            continue;
        };
        let mut g = floats(g);
        if let Some(p) = step["poison"].as_array()
            && p[0] == *name
        {
            g[p[1].as_u64().expect("index") as usize] = f32::NAN;
        }
        let g = Tensor::from_vec(g, shape.as_slice(), &Device::Cpu).expect("grad");
        store.insert(var.as_tensor(), g);
    }
    store
}

#[derive(Default)]
struct Worst {
    params: f64,
    moments: f64,
    norm: f64,
}

/// Applies golden steps `range` to `opt`/`vars` and checks every step against torch.
fn run_steps(
    sc: &Scenario<'_>,
    opt: &mut Optimizer,
    vars: &[Var],
    range: std::ops::Range<usize>,
    worst: &mut Worst,
) {
    for i in range {
        let step = &sc.steps[i];
        let what = format!("{} step {}", sc.name, i + 1);
        opt.set_lr(step["lr"].as_f64().expect("lr"));
        let grads = grad_store(step, vars, &sc.shapes);
        let before: Vec<Vec<f32>> = vars.iter().map(|v| values(v.as_tensor())).collect();
        let state_before = opt.state().expect("state");
        match (opt.step(&grads), step["grad_norm"].as_f64()) {
            (Ok(stats), Some(norm)) => {
                let err = (stats.grad_norm - norm).abs() / norm;
                assert!(
                    err <= TOL,
                    "{what}: grad norm {} vs torch {norm}",
                    stats.grad_norm
                );
                worst.norm = worst.norm.max(err);
                let clipped = step["clipped"].as_bool().expect("clipped");
                assert_eq!(stats.clip_coef < 1.0, clipped, "{what}: clipping");
                assert_eq!(stats.lr, step["lr"].as_f64().expect("lr"));
            }
            (Err(PolicyError::NonFinite(_)), None) => {
                assert!(step["skipped"].as_bool().expect("skipped"));
                let after: Vec<Vec<f32>> = vars.iter().map(|v| values(v.as_tensor())).collect();
                assert_eq!(before, after, "{what}: skipped step changed parameters");
                assert_eq!(
                    state_before,
                    opt.state().expect("state"),
                    "{what}: skipped step changed the optimizer state"
                );
            }
            (got, want) => panic!("{what}: step result {got:?}, torch norm {want:?}"),
        }
        for (n, var) in NAMES.iter().zip(vars) {
            let want = floats(&step["params"][n]);
            let e = rel_check(
                &format!("{what}: {n}"),
                &values(var.as_tensor()),
                &want,
                TOL,
            );
            worst.params = worst.params.max(e);
        }
        let state = opt.state().expect("state");
        let want_state = step["state"].as_object().expect("state");
        assert_eq!(
            state.vars.len(),
            want_state.len(),
            "{what}: vars with state"
        );
        for (n, ws) in want_state {
            let vs = &state.vars[n];
            assert_eq!(
                vs.step,
                ws["step"].as_u64().expect("step"),
                "{what}: {n} step"
            );
            let e1 = rel_check(
                &format!("{what}: {n} exp_avg"),
                &vs.exp_avg,
                &floats(&ws["exp_avg"]),
                TOL,
            );
            let e2 = rel_check(
                &format!("{what}: {n} exp_avg_sq"),
                &vs.exp_avg_sq,
                &floats(&ws["exp_avg_sq"]),
                TOL,
            );
            worst.moments = worst.moments.max(e1).max(e2);
        }
    }
}

#[test]
fn optimizer_matches_torch_adamw_golden() {
    let golden: Value = serde_json::from_str(GOLDEN).expect("golden json");
    let mut worst = Worst::default();
    for sc in scenarios(&golden) {
        let vars = make_vars(&sc.shapes, &sc.init);
        let mut opt = optimizer(&vars, sc.cfg);
        run_steps(&sc, &mut opt, &vars, 0..sc.steps.len(), &mut worst);
        let skipped = sc.steps.iter().filter(|s| s["skipped"] == true).count() as u64;
        assert_eq!(opt.steps(), sc.steps.len() as u64 - skipped);
    }
    eprintln!(
        "optimizer vs torch AdamW: worst relative error params {:e}, moments {:e}, grad norm {:e}",
        worst.params, worst.moments, worst.norm
    );
}

#[test]
fn checkpointed_state_resumes_like_an_uninterrupted_run() {
    let golden: Value = serde_json::from_str(GOLDEN).expect("golden json");
    let sc = scenarios(&golden).into_iter().next().expect("scenario");
    let mut worst = Worst::default();
    let vars = make_vars(&sc.shapes, &sc.init);
    let mut opt = optimizer(&vars, sc.cfg);
    run_steps(&sc, &mut opt, &vars, 0..3, &mut worst);
    let json = serde_json::to_string(&opt.state().expect("state")).expect("serialise");
    let state: OptimState = serde_json::from_str(&json).expect("deserialise");
    // A fresh process: new variables holding the saved parameters, a fresh optimizer.
    let saved: Vec<Vec<f32>> = vars.iter().map(|v| values(v.as_tensor())).collect();
    let vars2 = make_vars(&sc.shapes, &saved);
    let mut opt2 = optimizer(&vars2, OptimConfig::default());
    opt2.load_state(&state).expect("load");
    assert_eq!(opt2.state().expect("state"), state);
    run_steps(&sc, &mut opt, &vars, 3..sc.steps.len(), &mut worst);
    run_steps(&sc, &mut opt2, &vars2, 3..sc.steps.len(), &mut worst);
    for (a, b) in vars.iter().zip(&vars2) {
        assert_eq!(values(a.as_tensor()), values(b.as_tensor()));
    }
}

#[test]
fn load_state_rejects_foreign_state() {
    let shapes = vec![vec![2, 2], vec![3], vec![1]];
    let init = vec![vec![0.5f32; 4], vec![1.0; 3], vec![2.0]];
    let vars = make_vars(&shapes, &init);
    let mut opt = optimizer(&vars, OptimConfig::default());
    let mut grads = GradStore::default();
    for (v, s) in vars.iter().zip(&shapes) {
        grads.insert(
            v.as_tensor(),
            Tensor::ones(s.as_slice(), DType::F32, &Device::Cpu).expect("ones"),
        );
    }
    opt.step(&grads).expect("step");
    let good = opt.state().expect("state");
    let mut unknown = good.clone();
    let a = unknown.vars["a"].clone();
    unknown.vars.insert("z".into(), a);
    assert!(opt.load_state(&unknown).is_err());
    let mut wrong_shape = good.clone();
    if let Some(b) = wrong_shape.vars.get_mut("b") {
        b.exp_avg.pop();
    }
    assert!(opt.load_state(&wrong_shape).is_err());
    assert_eq!(
        opt.state().expect("state"),
        good,
        "a failed load changed the state"
    );
    // A gradient of the wrong shape is an error, not a silent broadcast.
    let mut bad = GradStore::default();
    bad.insert(
        vars[1].as_tensor(),
        Tensor::ones(4, DType::F32, &Device::Cpu).expect("ones"),
    );
    assert!(opt.step(&bad).is_err());
}

/// Log-probabilities of `ids` under a linear softmax policy `x @ w`: `(B, T)`.
fn policy_log_probs(w: &Var, x: &Tensor, ids: &Tensor) -> Tensor {
    let logits = x.broadcast_matmul(w.as_tensor()).expect("logits");
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).expect("log_softmax");
    lp.gather(&ids.unsqueeze(D::Minus1).expect("ids"), D::Minus1)
        .and_then(|t| t.squeeze(D::Minus1))
        .expect("gather")
}

#[test]
fn accumulating_two_half_micro_batches_equals_the_full_batch() {
    let dev = Device::Cpu;
    let (b, t, h, v) = (6usize, 7usize, 5usize, 9usize);
    let x = Tensor::randn(0f32, 1.0, (b, t, h), &dev).expect("x");
    let ids = Tensor::rand(0f32, v as f32, (b, t), &dev)
        .and_then(|r| r.floor())
        .and_then(|r| r.to_dtype(DType::U32))
        .expect("ids");
    let w0 = Tensor::randn(0f32, 0.5, (h, v), &dev).expect("w");
    // ragged mask: row r keeps its first t - r tokens, so the halves hold different token counts
    let mask: Vec<f32> = (0..b)
        .flat_map(|r| (0..t).map(move |j| if j < t - r { 1.0 } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (b, t), &dev).expect("mask");
    let adv = Tensor::new(&[1.2f32, -0.7, 0.3, -1.5, 2.0, -0.2], &dev).expect("adv");
    let w_probe = Var::from_tensor(&w0).expect("w");
    let old = (policy_log_probs(&w_probe, &x, &ids) + 0.3)
        .and_then(|o| o.broadcast_add(&Tensor::randn(0f32, 0.4, (b, t), &dev)?))
        .expect("old")
        .detach();
    let cfg = PpoConfig::default();

    // Full batch.
    let w_full = Var::from_tensor(&w0).expect("w");
    let mut opt_full = Optimizer::new([("w".to_string(), w_full.clone())], opt_cfg()).expect("opt");
    let lp = policy_log_probs(&w_full, &x, &ids);
    let terms = ppo_loss(&lp, &old, &adv, &mask, None, &cfg).expect("loss");
    let mut acc_full = opt_full.accumulator();
    acc_full.backward(&terms.loss, 1.0).expect("backward");
    let g_full = values(acc_full.grads().get(w_full.as_tensor()).expect("grad"));

    // Two micro-batches of half the rows, each loss scaled by its share of the valid tokens.
    let w_acc = Var::from_tensor(&w0).expect("w");
    let mut opt_acc = Optimizer::new([("w".to_string(), w_acc.clone())], opt_cfg()).expect("opt");
    let mut acc = opt_acc.accumulator();
    let total = mask
        .sum_all()
        .and_then(|s| s.to_scalar::<f32>())
        .expect("tokens");
    for start in [0, b / 2] {
        let rows = |t: &Tensor| t.narrow(0, start, b / 2).expect("narrow");
        let lp = policy_log_probs(&w_acc, &rows(&x), &rows(&ids));
        let m = rows(&mask);
        let terms = ppo_loss(&lp, &rows(&old), &rows(&adv), &m, None, &cfg).expect("loss");
        let share = GradAccumulator::token_share(&m, total.into()).expect("share");
        acc.backward(&terms.loss, share).expect("backward");
    }
    assert_eq!(acc.micro_batches(), 2);
    let g_acc = values(acc.grads().get(w_acc.as_tensor()).expect("grad"));
    let grad_err = g_full
        .iter()
        .zip(&g_acc)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    assert!(grad_err <= 1e-6, "gradient differs by {grad_err:e}");
    assert!(g_full.iter().any(|&g| g.abs() > 1e-4), "gradient is ~zero");

    let s_full = opt_full.step(&acc_full.take()).expect("step");
    let s_acc = opt_acc.step(&acc.take()).expect("step");
    assert_eq!(acc.micro_batches(), 0);
    assert!((s_full.grad_norm - s_acc.grad_norm).abs() <= 1e-6 * s_full.grad_norm);
    let p_err = values(w_full.as_tensor())
        .iter()
        .zip(&values(w_acc.as_tensor()))
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    assert!(p_err <= 1e-6, "parameters differ by {p_err:e}");
    eprintln!(
        "accumulation vs full batch: max grad diff {grad_err:e}, max param diff {p_err:e}, grad norm {}",
        s_full.grad_norm
    );
}

fn opt_cfg() -> OptimConfig {
    OptimConfig {
        lr: 1e-2,
        ..OptimConfig::default()
    }
}
