//! `gingham-cni`: the CNI plugin. Reads the runtime's environment and network configuration,
//! hands them to the local agent over its unix socket and prints the CNI result or error object.
//! Synchronous and dependency-light on purpose: a runtime calls it once per pod event.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use gingham_cni::{code, parse_cni_args, CniError, Command, Reply, Request, DEFAULT_SOCKET, SUPPORTED_VERSIONS};

/// Long enough for an IPAM claim on a busy datastore; a runtime has its own timeout too.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let version = std::env::var("CNI_COMMAND").ok();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if version.is_none() && args.first().map(String::as_str) == Some("install") {
        return install(&args[1..]);
    }
    if version.as_deref() == Some("VERSION") {
        println!("{}", serde_json::json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS}));
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", serde_json::to_string(&e).expect("an error object serialises"));
            ExitCode::FAILURE
        }
    }
}

/// The install-cni step (see `gingham_cni::install`); only without CNI_COMMAND, so a runtime's
/// call can never be taken for it.
fn install(args: &[String]) -> ExitCode {
    let result = gingham_cni::install::parse_args(args).and_then(|a| {
        let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        gingham_cni::install::install(&a, &me)
    });
    match result {
        Ok(written) => {
            for path in written {
                println!("installed {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gingham-cni install: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Result<String, CniError> {
    std::env::var(name)
        .map_err(|_| CniError::new(code::INVALID_ENVIRONMENT, format!("{name} is not set"), "the container runtime must set it"))
}

fn run() -> Result<serde_json::Value, CniError> {
    let command_text = env("CNI_COMMAND")?;
    let command = Command::parse(&command_text).ok_or_else(|| {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("unknown CNI_COMMAND {command_text:?}"),
            "expected ADD, DEL, CHECK, STATUS, GC or VERSION",
        )
    })?;
    let mut stdin = String::new();
    std::io::stdin()
        .read_to_string(&mut stdin)
        .map_err(|e| CniError::new(code::IO_FAILURE, "cannot read the network configuration", e.to_string()))?;
    let config: serde_json::Value = serde_json::from_str(&stdin)
        .map_err(|e| CniError::new(code::DECODE_FAILURE, "the network configuration on stdin is not JSON", e.to_string()))?;
    let config = gingham_cni::NetConf::parse(config)?;
    let mut request =
        Request { command, container_id: String::new(), netns: String::new(), ifname: String::new(), args: Vec::new(), config };
    match command {
        Command::Add | Command::Del | Command::Check => {
            request.container_id = env("CNI_CONTAINERID")?;
            request.ifname = env("CNI_IFNAME")?;
            // DEL may come without a namespace (it is already gone).
            request.netns = if command == Command::Del { std::env::var("CNI_NETNS").unwrap_or_default() } else { env("CNI_NETNS")? };
            request.args = parse_cni_args(&std::env::var("CNI_ARGS").unwrap_or_default())
                .map_err(|e| CniError::new(code::INVALID_ENVIRONMENT, e, ""))?;
        }
        Command::Status | Command::Gc => {}
    }
    let socket = request.config.agent_socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    let unreachable = if command == Command::Status { code::NOT_AVAILABLE } else { code::TRY_AGAIN_LATER };
    let mut stream = UnixStream::connect(&socket).map_err(|e| {
        CniError::new(
            unreachable,
            format!("gingham-agent is not reachable on {socket}: {e}"),
            "is the gingham-agent pod running on this node? try again later",
        )
    })?;
    let io = |e: std::io::Error| CniError::new(code::TRY_AGAIN_LATER, format!("talking to gingham-agent on {socket}: {e}"), "");
    stream.set_read_timeout(Some(AGENT_TIMEOUT)).map_err(io)?;
    stream.write_all(&serde_json::to_vec(&request).expect("a request serialises")).map_err(io)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    match serde_json::from_slice::<Reply>(&answer) {
        Ok(Reply::Ok(result)) => Ok(result),
        Ok(Reply::Err(e)) => Err(e),
        Err(e) => Err(CniError::new(code::DECODE_FAILURE, format!("gingham-agent on {socket} sent an unreadable reply"), e.to_string())),
    }
}
