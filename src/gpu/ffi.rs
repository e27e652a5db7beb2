//! The one raw NVML call nvml-wrapper lacks. With `plugin` and `slurm::sys`, one of the
//! crate's three modules allowed `unsafe`.

use std::ffi::c_uint;

/// The GPU and compute instance ids of a MIG device handle. nvml-wrapper 0.13 has no
/// safe call for `nvmlDeviceGetGpuInstanceId` / `nvmlDeviceGetComputeInstanceId`, so
/// they are called here, in the GPU layer's one FFI module.
pub(crate) fn mig_instance_ids(
    device: &nvml_wrapper::Device,
) -> Result<(u32, u32), nvml_wrapper::error::NvmlError> {
    use nvml_wrapper::error::{nvml_sym, nvml_try};
    let lib = device.nvml().lib();
    let gi_sym = nvml_sym(lib.nvmlDeviceGetGpuInstanceId.as_ref())?;
    let ci_sym = nvml_sym(lib.nvmlDeviceGetComputeInstanceId.as_ref())?;
    let (mut gi, mut ci): (c_uint, c_uint) = (0, 0);
    // SAFETY: the handle comes from `device`, which borrows the `Nvml` whose library
    // the symbols come from (it stays loaded and initialised meanwhile); both symbols have the C signature
    // `nvmlReturn_t f(nvmlDevice_t, unsigned int *)` and write one unsigned int through
    // the pointer, which points at a live local.
    unsafe {
        let handle = device.handle();
        nvml_try(gi_sym(handle, &mut gi))?;
        nvml_try(ci_sym(handle, &mut ci))?;
    }
    Ok((gi, ci))
}
