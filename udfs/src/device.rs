//! Which device models run on: CUDA when a GPU and libtorch's CUDA library are present, else CPU.
//!
//! The Rust linker passes `--as-needed`, which drops `libtorch_cuda.so` because no symbol of it is
//! referenced directly; libtorch then reports no CUDA even on a GPU node. Loading the library at
//! start-up (where it exists and its CUDA dependencies resolve) registers the CUDA backend again.

use std::sync::OnceLock;
use tch::Device;

/// Environment variable choosing the device: `auto` (default), `cpu`, `cuda` or `cuda:N`.
pub const DEVICE_ENV: &str = "SLUICE_DEVICE";

/// Loads libtorch's CUDA backend if it is there; returns whether CUDA is usable afterwards.
pub fn load_cuda_backend() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Some(dir) = option_env!("SLUICE_LIBTORCH_LIB") {
            candidates.push(format!("{dir}/libtorch_cuda.so"));
        }
        candidates.push("libtorch_cuda.so".to_string());
        let mut why = None;
        for lib in &candidates {
            // SAFETY: loading libtorch's own CUDA library runs its static initialisers, which
            // register the CUDA dispatch keys; it has no other side effect on this process.
            match unsafe { libloading::Library::new(lib) } {
                Ok(handle) => {
                    // Keep it loaded for the life of the process.
                    std::mem::forget(handle);
                    tracing::debug!(library = %lib, "loaded libtorch CUDA backend");
                    break;
                }
                Err(e) => {
                    tracing::debug!(library = %lib, error = %e, "libtorch CUDA backend not loaded");
                    why.get_or_insert_with(|| e.to_string());
                }
            }
        }
        let available = tch::Cuda::is_available();
        if !available && gpu_present() {
            // A GPU machine scoring on the CPU is a setup problem, not a choice: say what is missing.
            let why = why.unwrap_or_else(|| "libtorch's CUDA backend loaded, but it sees no device (driver?)".into());
            tracing::warn!(
                missing = %why,
                "this machine has an NVIDIA GPU but models will run on the CPU; install the CUDA libraries with \
                 scripts/setup.sh --cuda"
            );
            let _ = LOAD_ERROR.set(why);
        }
        available
    })
}

/// Why the CUDA backend did not load on a GPU machine, for error messages.
static LOAD_ERROR: OnceLock<String> = OnceLock::new();

/// Whether an NVIDIA GPU and its driver are on this machine.
fn gpu_present() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists() || std::path::Path::new("/dev/nvidia0").exists()
}

/// Parses a device name (`auto`, `cpu`, `cuda`, `cuda:N`).
pub fn parse_device(name: &str) -> Result<Device, String> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "" | "auto" => Ok(if load_cuda_backend() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => Err(format!("unknown device '{name}': use auto, cpu, cuda or cuda:N (set {DEVICE_ENV})")),
        },
    }
}

fn cuda(n: usize) -> Result<Device, String> {
    if !load_cuda_backend() {
        return Err(match LOAD_ERROR.get() {
            Some(why) => format!(
                "device cuda:{n} was asked for but libtorch's CUDA backend cannot load ({why}); install the CUDA \
                 libraries with scripts/setup.sh --cuda, or use cpu or auto"
            ),
            None => format!(
                "device cuda:{n} was asked for but CUDA is not available on this machine (no NVIDIA GPU or \
                 driver); use cpu or auto"
            ),
        });
    }
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    if n >= count {
        return Err(format!("device cuda:{n} does not exist: this machine has {count} CUDA device(s)"));
    }
    Ok(Device::Cuda(n))
}

static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();

/// The device of this process: the one [`choose_device`] set, else [`DEVICE_ENV`] (read once).
pub fn default_device() -> Result<Device, String> {
    DEVICE.get_or_init(|| parse_device(&std::env::var(DEVICE_ENV).unwrap_or_default())).clone()
}

/// Sets the device of this process (an executor's `--device`) before any model is loaded;
/// fails when it does not exist here, or when models already run on another one.
pub fn choose_device(name: &str) -> Result<Device, String> {
    let wanted = parse_device(name)?;
    let chosen = DEVICE.get_or_init(|| Ok(wanted)).clone()?;
    if chosen != wanted {
        return Err(format!("models in this process already run on {}", device_name(chosen)));
    }
    Ok(chosen)
}

/// The name of the device models in this process run on ([`default_device`]), or why none can.
pub fn default_device_name() -> String {
    default_device().map_or_else(|e| format!("unusable: {e}"), device_name)
}

/// A short name for a device, as users write it.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse_device("cpu"), Ok(Device::Cpu));
        assert!(parse_device("tpu").unwrap_err().contains("unknown device 'tpu'"));
        // `auto` always resolves: CUDA where usable, else CPU.
        let auto = parse_device("auto").unwrap();
        assert_eq!(auto == Device::Cpu, !tch::Cuda::is_available());
    }
}
