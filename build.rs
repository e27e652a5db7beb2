//! Generates Rust bindings for the SPANK API with bindgen, from the headers of the
//! Slurm being built for: `SLURM_INCLUDE_DIR`, else the installed /usr/include/slurm,
//! else the 22.05 copies in slurm-headers/. The plugin's `plugin_version` comes from
//! the same headers: Slurm loads a SPANK plugin only when its major.minor matches.

use std::env;
use std::path::{Path, PathBuf};

/// Returns the directory that contains `slurm/spank.h`.
fn include_root(dir: &Path) -> Option<PathBuf> {
    if dir.join("slurm/spank.h").is_file() {
        Some(dir.to_path_buf())
    } else if dir.join("spank.h").is_file() && dir.file_name().is_some_and(|n| n == "slurm") {
        dir.parent().map(Path::to_path_buf)
    } else {
        None
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let vendored = manifest.join("slurm-headers");
    let root = match env::var_os("SLURM_INCLUDE_DIR") {
        Some(dir) => include_root(Path::new(&dir)).unwrap_or_else(|| {
            panic!(
                "SLURM_INCLUDE_DIR={} has no spank.h (give the directory that holds slurm/spank.h)",
                Path::new(&dir).display()
            )
        }),
        None => include_root(Path::new("/usr/include")).unwrap_or(vendored),
    };
    for h in ["spank.h", "slurm_version.h", "slurm_errno.h"] {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("slurm").join(h).display()
        );
    }
    let version_h = std::fs::read_to_string(root.join("slurm/slurm_version.h"))
        .expect("slurm_version.h is readable");
    let number = version_h
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define SLURM_VERSION_NUMBER"))
        .map(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).expect("hex version"))
        .expect("SLURM_VERSION_NUMBER in slurm_version.h");
    let version = format!(
        "{}.{:02}.{}",
        number >> 16,
        (number >> 8) & 0xff,
        number & 0xff
    );
    println!("cargo:rustc-env=SPANK_CARBON_SLURM_VERSION={version}");
    println!(
        "cargo:rustc-env=SPANK_CARBON_SLURM_HEADERS={}",
        root.join("slurm").display()
    );
    println!(
        "cargo:warning=spank-carbon: building for Slurm {version} (headers: {})",
        root.join("slurm").display()
    );

    let bindings = bindgen::Builder::default()
        .header(root.join("slurm/spank.h").display().to_string())
        .clang_arg(format!("-I{}", root.display()))
        .allowlist_var("SLURM_VERSION_NUMBER")
        .allowlist_type("spank_t")
        .allowlist_type("spank_item")
        .allowlist_type("spank_context")
        .allowlist_var("ESPANK_SUCCESS")
        .allowlist_function("spank_context")
        .rustified_enum("spank_item")
        .rustified_enum("spank_context")
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen could not process spank.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("spank_bindings.rs");
    bindings.write_to_file(&out).expect("write bindings");
}
