//! Where the policy runs and in what precision: `cpu`, `cuda`, `cuda:N` or `auto`, and `f32`,
//! `bf16` or `auto` (the values of `trainer.device` / `trainer.dtype` and of the policy CLI's
//! `--device` / `--dtype`).
//!
//! CUDA needs a binary built with the `cuda` cargo feature (candle's CUDA backend). Such a binary
//! is linked against the driver's `libcuda.so.1` and CUDA 13's libraries and does not start
//! without them. `auto` picks GPU 0 when the binary has CUDA and the GPU opens, else the CPU; the
//! dtype `auto` is bf16 on a GPU (f32 master weights and optimizer state, see
//! [`super::LoadOptions::compute_dtype`]) and f32 on the CPU, where candle's bf16 kernels are
//! slower than its f32 ones.
//!
//! A GPU is opened with one CUDA stream shared by every thread (candle's default is a stream per
//! thread, unsynchronised between threads): the training graph loads the policy on one thread,
//! publishes weight snapshots from the update thread and samples from them on the rollout
//! thread, and one stream keeps that work in the order the channels hand it over.

use candle_core::{DType, Device};

use super::error::{PolicyError, Result};

/// A parsed device choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Auto,
}

impl std::str::FromStr for DeviceSpec {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            PolicyError::Input(format!(
                "device `{s}`: expected cpu, cuda, cuda:N (GPU ordinal N) or auto"
            ))
        };
        match s.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

/// Whether this binary was built with the `cuda` feature.
pub fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceSpec {
    /// Opens the device. `cuda` on a binary without the `cuda` feature, or on a machine whose
    /// driver or GPU does not answer, is an error that says what to do; `auto` falls back to the
    /// CPU instead.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !built_with_cuda() {
                    return Err(PolicyError::Input(format!(
                        "device cuda:{n}: this binary was built without CUDA; rebuild with \
                         `cargo build --release --features cuda` (README, \"GPU\"), or use \
                         device cpu"
                    )));
                }
                Device::new_cuda_with_stream(n).map_err(|e| {
                    PolicyError::Input(format!(
                        "device cuda:{n} cannot be opened ({e}); check `nvidia-smi` and the GPU \
                         ordinal"
                    ))
                })
            }
            Self::Auto => {
                if built_with_cuda()
                    && let Ok(d) = Device::new_cuda_with_stream(0)
                {
                    return Ok(d);
                }
                Ok(Device::Cpu)
            }
        }
    }
}

/// Parses and opens a device choice.
pub fn open_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.open()
}

/// The compute dtype for `spec` (`f32`, `bf16` or `auto`) on `device`.
pub fn compute_dtype(spec: &str, device: &Device) -> Result<DType> {
    match spec.trim() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "auto" => Ok(if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        }),
        other => Err(PolicyError::Input(format!(
            "dtype `{other}`: expected f32, bf16 or auto"
        ))),
    }
}

/// A short name of a device for logs and metrics: `cpu`, `cuda:0`, ...
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_expected() -> Result<()> {
        assert_eq!("cpu".parse::<DeviceSpec>()?, DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>()?, DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>()?, DeviceSpec::Cuda(3));
        assert_eq!(" auto ".parse::<DeviceSpec>()?, DeviceSpec::Auto);
        for bad in ["tpu", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("cpu, cuda, cuda:N")),
                "{bad}: {e:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn cpu_and_auto_open_and_dtypes_resolve() -> Result<()> {
        let cpu = open_device("cpu")?;
        assert!(cpu.is_cpu());
        assert_eq!(device_name(&cpu), "cpu");
        // No GPU on the machines that run the tests: auto is the CPU there.
        let auto = open_device("auto")?;
        if !built_with_cuda() {
            assert!(auto.is_cpu());
        }
        assert_eq!(compute_dtype("auto", &cpu)?, DType::F32);
        assert_eq!(compute_dtype("bf16", &cpu)?, DType::BF16);
        assert_eq!(compute_dtype("f32", &cpu)?, DType::F32);
        assert!(compute_dtype("f16", &cpu).is_err());
        Ok(())
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        if built_with_cuda() {
            return;
        }
        let e = open_device("cuda").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("--features cuda") && e.contains("device cpu")),
            "{e:?}"
        );
    }
}
