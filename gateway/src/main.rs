//! The `zonegate` binary: everything lives in the library; see `zonegate --help`.

// mimalloc: PERF-NOTES measured the system allocator at ~20% of a proxied request.
#[global_allocator]
static GLOBAL: zonegate_sys::alloc::MiMalloc = zonegate_sys::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    zonegate::cli::main()
}
