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
