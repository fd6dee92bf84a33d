use clap::Parser;

fn main() {
    let cli = outbox_relay::cli::Cli::parse();
    // Like any Unix tool, a command that prints its answer dies quietly when the reader of its
    // output goes away (`... | head`) instead of panicking on a broken pipe. Long-running commands
    // keep ignoring SIGPIPE: a relay must not die because whoever read its logs went away.
    #[cfg(unix)]
    if !cli.command.is_long_running() {
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // glibc gives every thread that allocates its own malloc arena (up to 8 per core), and memory
    // freed in one arena is not reused by another: a reload compiled on a blocking thread while
    // the workers keep sending left the relay with 10,000 webhooks at 121-148 MiB peak instead of
    // 108-123. Two arenas, unless the operator chose (MALLOC_ARENA_MAX is read by glibc itself).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    // Stacks big enough that compiling and rendering templates never has to move to a stack
    // segment of its own (only the pages used are committed).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(outbox_renderer::limits::STACK_SIZE)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(outbox_relay::execute(cli)) {
        Ok(()) => {}
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            std::process::exit(failure.code);
        }
    }
}
