//! Where models run: the CPU, or an NVIDIA GPU with the `cuda` feature.

use std::str::FromStr;

use candle_core::Device;

/// The `--device` an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// CUDA when built with it and a GPU is there, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            other => Err(format!("unknown device `{other}`: use cpu, cuda or auto")),
        }
    }
}

/// The device to use for `choice`, and a line for the operator when it is
/// not what they asked for (e.g. no GPU, or a build without CUDA).
pub fn pick_device(choice: DeviceChoice) -> (Device, Option<String>) {
    if choice == DeviceChoice::Cpu {
        return (Device::Cpu, None);
    }
    if !cfg!(feature = "cuda") {
        let note = (choice == DeviceChoice::Cuda).then(|| {
            "this telemine was built without the `cuda` feature: scoring on the CPU \
             (build with `cargo build --release --features cuda` to use the GPU)"
                .to_string()
        });
        return (Device::Cpu, note);
    }
    match Device::new_cuda(0) {
        Ok(d) => (d, None),
        Err(e) => (
            Device::Cpu,
            Some(format!("no usable CUDA GPU ({e}): scoring on the CPU")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there() {
        let (d, note) = pick_device(DeviceChoice::Cpu);
        assert!(d.is_cpu());
        assert!(note.is_none());
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda));
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }
}
