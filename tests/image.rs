//! The container image: `scripts/build-image.sh` builds the OCI archive (around this test's own `rtu`),
//! which is unpacked as a runtime does (index.json → manifest → config + layer, every digest
//! checked) and `rtu --version` / `rtu crd` run from the image's root filesystem with the
//! image's own dynamic loader and libraries. The Dockerfile is checked to build the same image.
//! Needs bash, python3, tar, gzip, ldd; no container runtime, no registry, no test servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;
use sha2::{Digest, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NONROOT: &str = "65532:65532";
const ENTRYPOINT: &str = "/usr/local/bin/rtu";
/// Where `ldd` puts the loader and the libraries on Debian (x86_64).
const LOADER: &str = "lib64/ld-linux-x86-64.so.2";
const LIB_DIRS: [&str; 2] = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"];

#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory of this test run (the release build shares its cache).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        // <target>/debug/rtu
        None => Path::new(env!("CARGO_BIN_EXE_rtu")).ancestors().nth(2).unwrap().to_path_buf(),
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A blob of the layout by its descriptor; its size and digest are checked.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256(&bytes), digest, "blob content does not match its digest");
    assert_eq!(Some(bytes.len() as u64), descriptor["size"].as_u64(), "size of {digest}");
    bytes
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn build_archive(out: &Path, extra: &[&str]) -> String {
    let output = run(Command::new("bash")
        .arg(repo().join("scripts/build-image.sh"))
        .args(extra)
        .arg("--out")
        .arg(out)
        .env("CARGO_TARGET_DIR", target_dir())
        // The binary this test target was built with (debug): the image's layout, loader and
        // libraries are what is checked here; a release build would only make CI slower.
        .env("RTU_IMAGE_BINARY", env!("CARGO_BIN_EXE_rtu"))
        .current_dir(repo()));
    stdout(&output)
}

/// The image as a runtime sees it.
struct Image {
    config: Value,
    manifest_digest: String,
    /// `tar -tv --numeric-owner` of the layer.
    listing: String,
    rootfs: PathBuf,
}

fn unpack(archive: &Path, dir: &Path) -> Image {
    let layout = dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout));

    let oci_layout = json(&std::fs::read(layout.join("oci-layout")).unwrap());
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let descriptor = &manifests[0];
    assert_eq!(descriptor["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(descriptor["platform"]["os"], "linux");
    assert_eq!(descriptor["platform"]["architecture"], "amd64");
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        format!("rtu-operator:{VERSION}")
    );

    let manifest = json(&blob(&layout, descriptor));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config = json(&blob(&layout, &manifest["config"]));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layer_gz = layout.join("layer.tar.gz");
    std::fs::write(&layer_gz, blob(&layout, &layers[0])).unwrap();
    run(Command::new("gzip").arg("-d").arg(&layer_gz));
    let layer_tar = layout.join("layer.tar");
    // The uncompressed layer is the diff_id the config names.
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([sha256(&std::fs::read(&layer_tar).unwrap())])
    );

    let listing =
        stdout(&run(Command::new("tar").args(["-tv", "--numeric-owner", "-f"]).arg(&layer_tar)));
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run(Command::new("tar").arg("-xf").arg(&layer_tar).arg("-C").arg(&rootfs));
    Image {
        config,
        manifest_digest: descriptor["digest"].as_str().unwrap().to_string(),
        listing,
        rootfs,
    }
}

fn check_config(config: &Value) {
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(c["User"], NONROOT, "{c}");
    let user = c["User"].as_str().unwrap();
    assert!(!user.is_empty() && !["0", "root"].contains(&user.split(':').next().unwrap()));
    assert_eq!(c["Entrypoint"], serde_json::json!([ENTRYPOINT]));
    let env: Vec<&str> = c["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).expect("PATH in Env");
    assert!(path.split(':').any(|d| d == "/usr/local/bin"), "{path}");
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"), "{env:?}");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "rtu-operator");
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(labels["org.opencontainers.image.description"], env!("CARGO_PKG_DESCRIPTION"));
}

/// Owners and modes of the layer: root's files except the nonroot home, no setuid/setgid bit,
/// no path leaving the root.
fn check_listing(listing: &str) {
    let mut seen = Vec::new();
    for line in listing.lines() {
        // drwxr-xr-x 0/0 0 1970-01-01 00:00 etc/
        let f: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, name) = (f[0], f[1], *f.last().unwrap());
        assert!(!name.starts_with('/') && !name.split('/').any(|p| p == ".."), "{line}");
        assert!(!mode[1..].contains(['s', 'S']), "setuid/setgid: {line}");
        assert_eq!(&f[3..5], ["1970-01-01", "00:00"], "mtime not 0: {line}");
        let expected =
            if name == "home/nonroot/" { NONROOT.replace(':', "/") } else { "0/0".into() };
        assert_eq!(owner, expected, "{line}");
        seen.push((mode, name));
    }
    for (mode, name) in [
        ("drwxrwxrwt", "tmp/"),
        ("drwx------", "home/nonroot/"),
        ("-rwxr-xr-x", "usr/local/bin/rtu"),
        ("-rw-r--r--", "etc/passwd"),
        ("-rw-r--r--", "etc/group"),
        ("-rw-r--r--", "etc/ssl/certs/ca-certificates.crt"),
        ("-rwxr-xr-x", LOADER),
    ] {
        assert!(seen.contains(&(mode, name)), "no {mode} {name} in the layer:\n{listing}");
    }
}

fn check_files(rootfs: &Path) {
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert!(read("etc/passwd").lines().any(|l| l.starts_with("nonroot:x:65532:65532:")));
    assert!(read("etc/group").lines().any(|l| l.starts_with("nonroot:x:65532:")));
    let ca = read("etc/ssl/certs/ca-certificates.crt");
    assert!(ca.matches("BEGIN CERTIFICATE").count() > 50, "CA bundle too small");
}

/// The image's own dynamic loader, told to look in the image's library directories only.
fn loader(rootfs: &Path) -> Command {
    let library_path = LIB_DIRS.map(|d| rootfs.join(d).display().to_string()).join(":");
    let mut cmd = Command::new(rootfs.join(LOADER));
    cmd.arg("--inhibit-cache").arg("--library-path").arg(library_path).env_clear();
    cmd
}

/// `rtu ARGS` from the image's root filesystem.
fn rtu_in_image(rootfs: &Path, args: &[&str]) -> Output {
    run(loader(rootfs).arg(rootfs.join(&ENTRYPOINT[1..])).args(args))
}

#[test]
fn the_image_archive_runs_rtu_from_its_own_root_filesystem() {
    let scratch = Scratch::new("image-oci");
    let started = Instant::now();
    let archive = scratch.0.join("rtu-operator.oci.tar");
    let report = build_archive(&archive, &[]);
    eprintln!("build-image.sh ({:.1?}):\n{report}", started.elapsed());

    let image = unpack(&archive, &scratch.0);
    assert!(report.contains(&format!("digest: {}", image.manifest_digest)), "{report}");
    check_config(&image.config);
    check_listing(&image.listing);
    check_files(&image.rootfs);

    // Every library the binary needs resolves inside the image: nothing from the host.
    let rootfs = &image.rootfs;
    let resolved = stdout(&run(loader(rootfs).arg("--list").arg(rootfs.join(&ENTRYPOINT[1..]))));
    let mut libraries = 0;
    for line in resolved.lines() {
        match line.split_once(" => ") {
            Some((_, path)) => {
                assert!(path.starts_with(&rootfs.display().to_string()), "from the host: {line}");
                libraries += 1;
            }
            None => assert!(line.trim().starts_with("linux-vdso"), "unexpected: {line}"),
        }
    }
    assert!(libraries >= 4, "{resolved}");

    let version = rtu_in_image(rootfs, &["--version"]);
    assert_eq!(stdout(&version), format!("rtu {VERSION}\n"));
    let crd = stdout(&rtu_in_image(rootfs, &["crd"]));
    for file in ["realtimeupdaters.rtu.fastdata.dev.yaml", "systemsofrecord.rtu.fastdata.dev.yaml"]
    {
        let committed = std::fs::read_to_string(repo().join("crds").join(file)).unwrap();
        assert!(crd.contains(&committed), "`rtu crd` in the image lacks crds/{file}");
    }

    // Extra, as root only: chroot into the image as 65532 and run `rtu` through the image's
    // PATH, as the kubelet runs command ["rtu"].
    if is_root() {
        let path = image.config["config"]["Env"][0].as_str().unwrap().to_string();
        let out = run(Command::new(host_program("chroot"))
            .arg(format!("--userspec={NONROOT}"))
            .arg(rootfs)
            .args(["rtu", "--version"])
            .env_clear()
            .env("PATH", path.strip_prefix("PATH=").unwrap()));
        assert_eq!(stdout(&out), format!("rtu {VERSION}\n"));
        eprintln!("chroot --userspec={NONROOT}: rtu --version ok");
    } else {
        eprintln!("chroot check not run: not root (the loader check above is the real one)");
    }

    // Reproducible: the same binary gives the same archive, byte for byte. (--no-build: the
    // binary just checked, even if another checkout sharing the target dir rebuilt it since.)
    let again = scratch.0.join("again.oci.tar");
    let again_started = Instant::now();
    build_archive(&again, &["--no-build"]);
    eprintln!("build-image.sh --no-build: {:.1?}", again_started.elapsed());
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(&again).unwrap(),
        "two builds of the same binary differ"
    );
    eprintln!("image test: {:.1?}", started.elapsed());
}

/// A host program by absolute path: the child's PATH is the image's, not the host's.
fn host_program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found"))
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// The Dockerfile builds the same image: the root filesystem from the script, the same user,
/// entrypoint, environment and labels as the archive's config (checked above).
#[test]
fn the_dockerfile_matches_the_archive() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for line in [
        "FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build".to_string(),
        format!("ARG RUST_VERSION={}", env!("CARGO_PKG_RUST_VERSION")),
        "    scripts/build-image.sh --rootfs /rootfs".into(),
        "FROM scratch".into(),
        "COPY --from=build /rootfs/ /".into(),
        format!("ARG VERSION={VERSION}"),
        "ENV PATH=/usr/local/bin:/usr/bin:/bin \\".into(),
        "    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
        "WORKDIR /home/nonroot".into(),
        format!("USER {NONROOT}"),
        format!("ENTRYPOINT [\"{ENTRYPOINT}\"]"),
        "CMD [\"--help\"]".into(),
        format!(
            "      org.opencontainers.image.description=\"{}\" \\",
            env!("CARGO_PKG_DESCRIPTION")
        ),
        format!("      org.opencontainers.image.licenses=\"{}\"", env!("CARGO_PKG_LICENSE")),
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "Dockerfile lacks the line {line:?}");
    }
    let script = std::fs::read_to_string(repo().join("scripts/build-image.sh")).unwrap();
    for arg in [
        "--env PATH=/usr/local/bin:/usr/bin:/bin",
        "--env SSL_CERT_FILE=$CA_BUNDLE",
        "--workdir /home/nonroot",
        "--cmd=--help",
    ] {
        assert!(script.contains(arg), "build-image.sh lacks {arg:?}");
    }
}
