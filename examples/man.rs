//! Writes the man page `consul-dns.1`, generated from the command line's clap definition
//! (`consul_dns::config::Cli`) with clap_mangen, plus the sections clap does not know of
//! (signals, files, exit status, see also). The Debian package ships it (`cargo deb` takes
//! it from `target/man/`); `.ci/package` makes it before packaging.
//!
//! `cargo run --example man [-- DIR]` (default DIR: `target/man`); prints the file's path.
//!
//! An example rather than a build script or a workspace member: clap_mangen stays a
//! dev-dependency, `cargo build` never compiles it, and `cargo test` compiles this file, so
//! the page cannot fall behind the flags unnoticed.

use std::fs;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_mangen::Man;
use consul_dns::config::Cli;
use roff::{bold, italic, roman, Roff};

/// Where the Debian package puts what the page's FILES section names.
const CONFIG_FILE: &str = "/etc/consul-dns/consul-dns.toml";
const ZONES_DIR: &str = "/etc/consul-dns/zones";
const UNIT_FILE: &str = "/usr/lib/systemd/system/consul-dns.service";
const DOC_DIR: &str = "/usr/share/doc/consul-dns";

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/man"), PathBuf::from);
    let command = Cli::command();
    let man = Man::new(command.clone());

    let mut page = Vec::new();
    // The standard sections, in clap_mangen's order (as `Man::render`), with ours between
    // the options and the version.
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    extra_sections().to_writer(&mut page)?;
    man.render_version_section(&mut page)?;

    fs::create_dir_all(&dir)?;
    let path = dir.join(man.get_filename());
    fs::write(&path, page)?;
    println!("{}", path.display());
    Ok(())
}

fn extra_sections() -> Roff {
    let mut roff = Roff::new();

    roff.control("SH", ["SIGNALS"]);
    tagged(
        &mut roff,
        "SIGHUP",
        "Reload the static zone files and the DNS-over-TLS certificate (a zone or certificate \
         that fails to load keeps the previous one). Under systemd: systemctl reload consul-dns.",
    );
    tagged(
        &mut roff,
        "SIGINT, SIGTERM",
        "Stop: the servers shut down (within 5 seconds) and the process exits 0.",
    );
    roff.control("PP", []).text([roman(
        "With $NOTIFY_SOCKET set (systemd Type=notify), READY=1 is sent once the sockets are \
         bound and the first sync with Consul is done or startup_wait has passed, \
         RELOADING=1 and READY=1 around a reload, STOPPING=1 at shutdown.",
    )]);

    roff.control("SH", ["FILES"]);
    tagged(
        &mut roff,
        CONFIG_FILE,
        "The configuration file of the packaged service (--config), a conffile: every key \
         with its default, the dns_config keys under Consul's names.",
    );
    tagged(
        &mut roff,
        ZONES_DIR,
        "Static zone files (<origin>.zone) served by the packaged service, the default zones \
         directory in its working directory /etc/consul-dns.",
    );
    tagged(
        &mut roff,
        UNIT_FILE,
        "The systemd unit: an unprivileged dynamic user allowed to bind port 53, \
         Type=notify.",
    );
    tagged(
        &mut roff,
        DOC_DIR,
        "README.md (the full documentation) and the licences.",
    );

    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 after a clean shutdown; 2 when the command line or the configuration is invalid \
         or the server cannot start (a listen address in use, an unreadable zone file or \
         certificate), with the reason on standard error; 1 when the runtime cannot start.",
    )]);

    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("consul"),
        roman("(1), "),
        bold("systemd.service"),
        roman("(5), "),
        bold("systemctl"),
        roman("(1), "),
        italic("https://developer.hashicorp.com/consul/docs/services/discovery/dns-overview"),
    ]);
    roff
}

/// A `.TP` paragraph: the tag in bold, then its text.
fn tagged(roff: &mut Roff, tag: &str, text: &str) {
    roff.control("TP", []).text([bold(tag)]).text([roman(text)]);
}
