//! The `sluice` binary: see `sluice --help`.

// mimalloc: per-thread free lists suit the shard-per-core design (memory freed on
// the shard that allocated it never touches a shared lock).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(sluice::cli::main());
}
