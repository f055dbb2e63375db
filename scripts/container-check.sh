#!/usr/bin/env bash
# Checks packaging/: the container recipe (packaging/Containerfile) and the
# systemd unit (packaging/telemine.service).
#
#   scripts/container-check.sh [BINARY]
#
# Two modes, chosen by what the machine has:
#
# - build mode, where a container engine answers (`docker info`, else
#   `podman info`; CONTAINER_ENGINE=docker|podman picks one): builds the
#   image for real, then runs in it `telemine check` on the image's own
#   config and SQL, `ldd` on its binary (nothing "not found") and `id -u`
#   (not 0).
# - static mode, where none does (the project's machines: the docker CLI is
#   there, its daemon is not). What stands in for the build:
#     a. the Containerfile's structure: two stages, the build on
#        rust:1.95-bookworm with `cargo build --release --locked`, the
#        runtime on debian:bookworm-slim, a non-root USER, EXPOSE and the
#        HEALTHCHECK on the config's port, ENTRYPOINT and CMD (parsed by the
#        binary's own command line);
#     b. every shared library BINARY links (ldd), mapped to its Debian
#        package (dpkg -S): each must be in bookworm-slim already or be
#        installed by the runtime stage's apt-get line;
#     c. `telemine check` on the files the Containerfile puts in the image
#        (the config made by packaging/image-config.sh, the COPYed SQL),
#        laid out under a temporary root as /etc/telemine, run as uid
#        10001 when this runs as root (so they must be readable to it);
#     d. the image's config served: `telemine run` on it (the port moved to
#        a free one, no broker there) answers the HEALTHCHECK's probe of
#        /healthz, then stops on SIGTERM.
#
# Both modes run `systemd-analyze verify` on the unit (its ExecStart
# pointed at BINARY, which verify requires to exist) and check that it
# runs what the image runs.
#
# BINARY defaults to $CARGO_TARGET_DIR/release/telemine, then
# $CARGO_TARGET_DIR/debug/telemine (CARGO_TARGET_DIR defaulting to
# target). A debug build links the same libraries as a release one (same
# crates and features); build mode ignores it.
#
# Exits 0 when everything passed, 1 with a line per failure saying what to
# fix, 2 on a usage error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

containerfile=packaging/Containerfile
unit=packaging/telemine.service
image_config_script=packaging/image-config.sh

# The image's layout, as the Containerfile makes it; (a) checks that it does.
image_binary=/usr/local/bin/telemine
image_config=/etc/telemine/telemine.toml
image_uid=10001
build_base=docker.io/library/rust:1.95-bookworm
runtime_base=docker.io/library/debian:bookworm-slim

# The library packages debian:bookworm-slim ships (Debian's official image,
# as debuerreotype lists it in bookworm/slim/rootfs.manifest), so the
# runtime stage need not install them. Non-library packages of the image
# (coreutils, bash, apt, ...) are left out: the binary links none of them.
slim_libraries=(
  gcc-12-base libacl1 libapt-pkg6.0 libattr1 libaudit1 libblkid1
  libbz2-1.0 libc6 libcap-ng0 libcap2 libcom-err2 libcrypt1 libdb5.3
  libdebconfclient0 libext2fs2 libffi8 libgcc-s1 libgcrypt20 libgmp10
  libgnutls30 libgpg-error0 libhogweed6 libidn2-0 liblz4-1 liblzma5 libmd0
  libmount1 libnettle8 libp11-kit0 libpam0g libpcre2-8-0 libseccomp2
  libselinux1 libsemanage2 libsepol2 libsmartcols1 libss2 libstdc++6
  libsystemd0 libtasn1-6 libtinfo6 libudev1 libunistring2 libuuid1
  libxxhash0 libzstd1 zlib1g
)

if [ "$#" -gt 1 ]; then
  echo "usage: scripts/container-check.sh [BINARY]" >&2
  exit 2
fi

failures=0
ok() { printf '  ok    %s\n' "$*"; }
fail() {
  printf '  FAIL  %s\n' "$*"
  failures=$((failures + 1))
}
note() { printf '  note  %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/container-check.XXXXXX")
chmod 755 "$work"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# The Containerfile as logical instructions: comments dropped (also inside a
# continued instruction, as the builders drop them), continuation lines
# joined. Each line of $work/instructions: STAGE<TAB>INSTRUCTION<TAB>ARGS,
# STAGE counting FROMs from 1 (0: before the first FROM).
awk '
  /^[ \t]*#/ { next }
  {
    line = $0
    if (match(line, /\\[ \t]*$/)) { buf = buf substr(line, 1, RSTART - 1) " "; next }
    buf = buf line
    if (buf !~ /^[ \t]*$/) print buf
    buf = ""
  }
  END { if (buf !~ /^[ \t]*$/) print buf }
' "$containerfile" |
  awk '{
    sub(/^[ \t]+/, "")
    word = $0; sub(/[ \t].*$/, "", word); word = toupper(word)
    rest = $0; sub(/^[^ \t]+[ \t]*/, "", rest); gsub(/[ \t]+/, " ", rest)
    if (word == "FROM") stage++
    printf "%d\t%s\t%s\n", stage, word, rest
  }' >"$work/instructions"

# instr STAGE NAME: the ARGS of each NAME instruction of STAGE, one a line.
instr() {
  awk -F '\t' -v s="$1" -v n="$2" '$1 == s && $2 == n { print $3 }' "$work/instructions"
}

# json_words '["a", "b"]' -> a b (one a line): the exec form's words.
json_words() {
  local s=$1
  s=${s#[}
  s=${s%]}
  tr ',' '\n' <<<"$s" | sed -e 's/^[[:space:]]*"//' -e 's/"[[:space:]]*$//'
}

# The global ARGs (before the first FROM) with their defaults, substituted
# into each FROM as the builders do.
declare -A arg_default=()
while IFS= read -r a; do
  [[ "$a" == *=* ]] && arg_default["${a%%=*}"]=${a#*=}
done < <(instr 0 ARG)
resolve() {
  local s=$1 name
  for name in "${!arg_default[@]}"; do
    s=${s//"\${$name}"/${arg_default[$name]}}
    s=${s//"\$$name"/${arg_default[$name]}}
  done
  printf '%s\n' "$s"
}

# The port of [http] listen in a config file.
listen_port() {
  awk '
    /^[ \t]*\[/ { s = $0; gsub(/[][ \t]/, "", s); next }
    s == "http" && /^[ \t]*listen[ \t]*=/ {
      v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/".*$/, "", v)
      n = split(v, p, ":"); print p[n]; exit
    }' "$1"
}

# ---------------------------------------------------------------------------
# The mode.
engine=""
if [ -n "${CONTAINER_ENGINE:-}" ]; then
  candidates=("$CONTAINER_ENGINE")
else
  candidates=(docker podman)
fi
for e in "${candidates[@]}"; do
  if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
    engine=$e
    break
  fi
done

if [ -n "$engine" ]; then
  mode=build
  echo "container-check: BUILD mode: '$engine info' answers, so the image is really built and run"
else
  mode=static
  echo "container-check: STATIC mode: no container engine answers ('docker info' fails here: no daemon), so no image is built;"
  echo "  the Containerfile's structure, the binary's libraries against the runtime stage, 'telemine check' and the"
  echo "  HTTP probe on the image's files, and the systemd unit are checked instead (see packaging/README.md)"
fi

# ---------------------------------------------------------------------------
section "a. $containerfile: structure"

stages=$(awk -F '\t' '$2 == "FROM"' "$work/instructions" | wc -l)
if [ "$stages" -eq 2 ]; then
  ok "two stages"
else
  fail "$stages FROM lines; expected two stages (build, runtime)"
fi

from_build=$(resolve "$(instr 1 FROM)")
from_runtime=$(resolve "$(instr 2 FROM)")
if [ "$from_build" = "$build_base AS build" ]; then
  ok "build stage: FROM $from_build"
else
  fail "build stage is 'FROM $from_build'; expected 'FROM $build_base AS build' (the project's toolchain, Rust 1.95, on bookworm like the runtime)"
fi
if [ "$from_runtime" = "$runtime_base AS runtime" ]; then
  ok "runtime stage: FROM $from_runtime"
else
  fail "runtime stage is 'FROM $from_runtime'; expected 'FROM $runtime_base AS runtime'"
fi

if command -v rustc >/dev/null 2>&1; then
  here=$(rustc --version | awk '{ split($2, v, "."); print v[1] "." v[2] }')
  if [[ "$from_build" == *":$here-"* ]]; then
    ok "build image's Rust $here is this machine's toolchain"
  else
    note "this machine builds with Rust $here; the image with ${from_build#*:} (update RUST_VERSION in $containerfile if the project moved)"
  fi
fi

build_runs=$(instr 1 RUN)
if grep -q -- 'cargo build --release --locked --bin telemine' <<<"$build_runs"; then
  ok "build stage runs 'cargo build --release --locked --bin telemine'"
else
  fail "build stage must run 'cargo build --release --locked --bin telemine'"
fi
if grep -q -- '--mount=type=cache,target=/usr/local/cargo/registry' <<<"$build_runs" &&
  grep -q -- '--mount=type=cache,target=/src/target' <<<"$build_runs"; then
  ok "cargo registry and target are cache mounts"
else
  fail "the cargo build should use cache mounts for /usr/local/cargo/registry and /src/target"
fi
if grep -qx "sh $image_config_script config/telemine.toml /out/telemine.toml" <<<"$build_runs"; then
  ok "the image's config is made by $image_config_script from config/telemine.toml"
else
  fail "build stage must run 'sh $image_config_script config/telemine.toml /out/telemine.toml' (this check reproduces that config)"
fi

runtime_copies=$(instr 2 COPY)
for want in "--from=build /out/telemine $image_binary" "--from=build /out/telemine.toml $image_config"; do
  if grep -qx -- "$want" <<<"$runtime_copies"; then
    ok "runtime: COPY $want"
  else
    fail "runtime stage must 'COPY $want'"
  fi
done

user=$(instr 2 USER | tail -n 1)
user_name=${user%%:*}
if [ -z "$user" ]; then
  fail "runtime stage has no USER: the engine would run as root"
elif [ "$user_name" = root ] || [ "$user_name" = 0 ]; then
  fail "runtime stage runs as '$user'; use the unprivileged telemine user"
elif [ "$user_name" != "$image_uid" ]; then
  fail "runtime USER is '$user'; expected $image_uid:$image_uid (numeric, so Kubernetes' runAsNonRoot can verify it)"
else
  ok "runtime USER $user (non-root, numeric)"
fi
if grep -q -- "useradd .*--uid $image_uid" <<<"$(instr 2 RUN)"; then
  ok "runtime stage creates the telemine user with uid $image_uid"
else
  fail "runtime stage must create the user telemine with --uid $image_uid"
fi

entrypoint=$(instr 2 ENTRYPOINT | tail -n 1)
cmd=$(instr 2 CMD | tail -n 1)
if [ "$entrypoint" = '["telemine"]' ]; then
  ok "ENTRYPOINT $entrypoint"
else
  fail "ENTRYPOINT is '$entrypoint'; expected [\"telemine\"] (exec form, so telemine is PID 1 and gets SIGTERM)"
fi
mapfile -t cmd_words < <(json_words "$cmd")
if [ "${cmd_words[*]}" = "run --config $image_config" ]; then
  ok "CMD $cmd"
else
  fail "CMD is '$cmd'; expected [\"run\", \"--config\", \"$image_config\"]"
fi

expose=$(instr 2 EXPOSE | tr ' ' '\n' | sed 's#/tcp$##' | grep . || true)
healthcheck=$(instr 2 HEALTHCHECK)
health_port=$(sed -n 's#.*/dev/tcp/127\.0\.0\.1/\([0-9][0-9]*\).*#\1#p' <<<"$healthcheck")
if [ -z "$healthcheck" ]; then
  fail "runtime stage has no HEALTHCHECK"
elif ! grep -q '/healthz' <<<"$healthcheck"; then
  fail "the HEALTHCHECK should ask /healthz"
fi

# The files the runtime stage COPYs from the build context must not be
# kept out of it by .dockerignore (top-level names only: all this repo's
# COPYs use).
if [ -f .dockerignore ]; then
  for p in $(awk '$1 !~ /^--/ { print $1 }' <<<"$runtime_copies") config packaging Cargo.toml Cargo.lock src connectors model benches; do
    top=${p%%/*}
    if grep -qxE "/?$top/?" .dockerignore; then
      fail ".dockerignore excludes '$top', which the image build needs"
    fi
  done
  ok ".dockerignore keeps what the build COPYs"
else
  fail "no .dockerignore at the repository root: the build context would carry target/ (gigabytes)"
fi

# ---------------------------------------------------------------------------
# The image's /etc/telemine, made as the Containerfile makes it: the config
# by the same script, then every COPY of the runtime stage from the build
# context. Both modes check the config against EXPOSE and HEALTHCHECK.
root="$work/root"
mkdir -p "$root/etc/telemine" "$root/usr/local/bin" "$root/var/lib/telemine"
if sh "$image_config_script" config/telemine.toml "$root$image_config" >"$work/image-config.log" 2>&1; then
  ok "$image_config_script made the image's config"
else
  fail "$image_config_script failed: $(cat "$work/image-config.log")"
fi
while IFS= read -r copy; do
  read -r -a words <<<"$copy"
  case "${words[0]}" in --*) continue ;; esac
  if [ "${#words[@]}" -ne 2 ]; then
    fail "runtime 'COPY $copy': this check knows 'COPY SRC DEST' only; extend it"
    continue
  fi
  src=${words[0]}
  dest=$root${words[1]}
  if [ -d "$src" ]; then
    mkdir -p "$dest"
    cp -R "$src/." "$dest/"
  elif [ -f "$src" ]; then
    mkdir -p "$(dirname "$dest")"
    cp "$src" "$dest"
  else
    fail "runtime 'COPY $copy': $src is not in the repository"
  fi
done <<<"$runtime_copies"
chmod -R a+rX "$root"

config_port=$(listen_port "$root$image_config" || true)
if [ -z "$config_port" ]; then
  fail "the image's config has no [http] listen: nothing to EXPOSE or probe"
else
  if grep -qx "$config_port" <<<"$expose"; then
    ok "EXPOSE $config_port is the image config's [http] listen port"
  else
    fail "EXPOSE '$expose' does not name the image config's [http] listen port $config_port"
  fi
  if [ "$health_port" = "$config_port" ]; then
    ok "HEALTHCHECK probes /healthz on port $config_port"
  else
    fail "HEALTHCHECK probes port '$health_port'; the image's config listens on $config_port"
  fi
  if grep -q '^listen = "0\.0\.0\.0:' "$root$image_config"; then
    ok "the image's config listens on 0.0.0.0 (reachable through -p and by probes)"
  else
    fail "the image's config must listen on 0.0.0.0, not loopback, to be reachable from outside the container"
  fi
fi

# ---------------------------------------------------------------------------
# The binary (static mode's b to d, and the unit's verify).
find_binary() {
  if [ "$#" -eq 1 ]; then
    printf '%s\n' "$1"
    return
  fi
  local t=${CARGO_TARGET_DIR:-target} f
  for f in "$t/release/telemine" "$t/debug/telemine"; do
    if [ -x "$f" ]; then
      printf '%s\n' "$f"
      return
    fi
  done
  printf '%s\n' "$t/release/telemine"
}
binary=$(find_binary "$@")
if [ ! -x "$binary" ]; then
  if [ "$mode" = static ]; then
    section "binary"
    fail "no telemine binary at '$binary': build one (cargo build --release --bin telemine) or pass its path"
  fi
  # Build mode takes the image's own binary, once built, for the unit.
  binary=""
else
  # Put it where the image has it: a hard link where the file system allows
  # and the file is already executable by all, else a copy made so.
  if [ "$(stat -c %A "$binary" | cut -c8-10)" = r-x ] && ln "$binary" "$root$image_binary" 2>/dev/null; then
    :
  else
    cp "$binary" "$root$image_binary"
    chmod 755 "$root$image_binary"
  fi
fi

# What runs the binary as the image's uid when this runs as root (so the
# files must be readable to it, as in the image); else it runs as we are.
as_image_user=()
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
  as_image_user=(setpriv --reuid="$image_uid" --regid="$image_uid" --clear-groups --)
fi

if [ "$mode" = build ]; then
  section "b-d. $engine build -f $containerfile, then the image itself"
  tag=telemine:container-check
  if "$engine" build -f "$containerfile" -t "$tag" .; then
    ok "$engine build"
    if "$engine" run --rm "$tag" check --config "$image_config"; then
      ok "in the image: telemine check --config $image_config"
    else
      fail "in the image: 'telemine check --config $image_config' failed (above)"
    fi
    if libs=$("$engine" run --rm --entrypoint ldd "$tag" "$image_binary") && ! grep -q 'not found' <<<"$libs"; then
      ok "in the image: ldd $image_binary finds every library"
    else
      fail "in the image: ldd $image_binary: $(grep 'not found' <<<"$libs" | tr '\n' ' '); add the packages to the runtime stage's apt-get line"
    fi
    uid=$("$engine" run --rm --entrypoint id "$tag" -u || true)
    if [ -n "$uid" ] && [ "$uid" != 0 ]; then
      ok "in the image: runs as uid $uid"
    else
      fail "in the image: runs as uid '$uid'"
    fi
    if [ -z "$binary" ] && cid=$("$engine" create "$tag"); then
      if "$engine" cp "$cid:$image_binary" "$root$image_binary"; then
        chmod 755 "$root$image_binary"
        binary=$root$image_binary
      fi
      "$engine" rm "$cid" >/dev/null || true
    fi
  else
    fail "$engine build -f $containerfile . failed (above)"
  fi
elif [ -n "$binary" ]; then
  # -------------------------------------------------------------------------
  section "b. $binary: shared libraries against the runtime stage"
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
  if [ "$codename" != bookworm ] || ! command -v dpkg >/dev/null 2>&1; then
    fail "this machine is not Debian bookworm ('$codename'): its libraries say nothing about the image's; run this on bookworm, or where a container engine answers"
  else
    # The packages the runtime stage installs.
    runtime_pkgs=$(instr 2 RUN | awk '{
      for (i = 1; i <= NF; i++) {
        if ($i == "install" && $(i - 1) == "apt-get") { on = 1; continue }
        if (on && ($i == "&&" || $i == ";" || $i == "|")) on = 0
        if (on && $i !~ /^-/) print $i
      }
    }')
    if [ -z "$runtime_pkgs" ]; then
      note "the runtime stage installs no package"
    fi
    for p in $runtime_pkgs; do
      if apt-cache show "$p" >/dev/null 2>&1; then
        ok "runtime installs $p (a bookworm package)"
      else
        fail "runtime stage installs '$p', which apt does not know in bookworm"
      fi
    done
    # Each library ldd resolves, to its package.
    if ! ldd "$binary" >"$work/ldd" 2>&1; then
      fail "ldd $binary failed: $(cat "$work/ldd")"
    fi
    if grep -q 'not found' "$work/ldd"; then
      fail "libraries not found on this machine: $(grep 'not found' "$work/ldd" | tr '\n' ' ')"
    fi
    while read -r path; do
      pkg=""
      for candidate in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
        if pkg=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1); then
          [ -n "$pkg" ] && break
        fi
      done
      if [ -z "$pkg" ]; then
        fail "$path belongs to no Debian package here: the image cannot get it with apt; link it statically or install it in the runtime stage"
      elif printf '%s\n' "${slim_libraries[@]}" | grep -qx "$pkg"; then
        ok "$(basename "$path") <- $pkg (in bookworm-slim)"
      elif grep -qx "$pkg" <<<"$runtime_pkgs"; then
        ok "$(basename "$path") <- $pkg (runtime stage installs it)"
      else
        fail "$(basename "$path") <- $pkg: neither in bookworm-slim nor installed; add '$pkg' to the runtime stage's apt-get install line"
      fi
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$work/ldd" | sort -u)
  fi

  # -------------------------------------------------------------------------
  section "c. telemine check on the image's files (as uid $image_uid under $root)"
  mapfile -t cmd_args < <(json_words "$cmd")
  if "$binary" "${cmd_args[@]}" --help >/dev/null 2>&1; then
    ok "the binary takes the image's CMD: telemine ${cmd_args[*]}"
  else
    fail "'telemine ${cmd_args[*]}' is not a command line this binary takes ('telemine ${cmd_args[*]} --help' fails)"
  fi
  if (cd "$root/var/lib/telemine" && exec "${as_image_user[@]}" "$root$image_binary" check --config "$root$image_config") >"$work/check.log" 2>&1; then
    ok "telemine check --config $image_config (under $root): exit 0"
    sed 's/^/        /' "$work/check.log" | head -n 40
  else
    # The image's /etc/telemine/sql is the repository's sql/: name that.
    fail "telemine check on the image's config and SQL failed; fix config/telemine.toml, sql/ or $image_config_script:"
    sed -e "s#$root/etc/telemine/sql/#sql/#g" -e "s#$root##g" -e 's/^/        /' "$work/check.log"
  fi

  # -------------------------------------------------------------------------
  section "d. the image's config served: the HEALTHCHECK's probe, then SIGTERM"
  # The image's config with the port moved to a free one on loopback (this
  # machine may use 9464), otherwise as shipped: its brokers (kafka:9092)
  # are not here, so run waits for them while the HTTP server answers.
  probe_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 19464)
  sed "s#^listen = \"0\.0\.0\.0:$config_port\"#listen = \"127.0.0.1:$probe_port\"#" "$root$image_config" >"$root/etc/telemine/probe.toml"
  chmod a+r "$root/etc/telemine/probe.toml"
  probe_cmd=${healthcheck#*CMD }
  probe_cmd=${probe_cmd//127.0.0.1\/$config_port/127.0.0.1\/$probe_port}
  (cd "$root/var/lib/telemine" && exec "${as_image_user[@]}" "$root$image_binary" run --config "$root/etc/telemine/probe.toml") >"$work/run.log" 2>&1 &
  server_pid=$!
  answered=""
  for _ in $(seq 1 30); do
    if sh -c "$probe_cmd" 2>/dev/null; then
      answered=yes
      break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      break
    fi
    sleep 1
  done
  if [ -n "$answered" ]; then
    ok "the HEALTHCHECK command got 200 from /healthz (telemine run on the image's config, port $probe_port)"
  else
    fail "the HEALTHCHECK command got no 200 from /healthz of 'telemine run' on the image's config (port $probe_port):"
    tail -n 20 "$work/run.log" | sed 's/^/        /'
  fi
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    stopped=""
    for _ in $(seq 1 60); do
      if ! kill -0 "$server_pid" 2>/dev/null; then
        stopped=yes
        break
      fi
      sleep 1
    done
    if [ -n "$stopped" ]; then
      rc=0
      wait "$server_pid" || rc=$?
      server_pid=""
      ok "SIGTERM stopped it in time (exit $rc while it still waited for the brokers)"
    else
      fail "telemine run did not stop within 60 s of SIGTERM (docker stop would kill it)"
    fi
  fi
fi

# ---------------------------------------------------------------------------
section "$unit: systemd-analyze verify"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
if [ "$exec_start" = "$image_binary ${cmd_words[*]}" ]; then
  ok "ExecStart runs what the image runs: $exec_start"
else
  fail "ExecStart is '$exec_start'; expected '$image_binary ${cmd_words[*]}' (the binary and config paths of packaging/README.md)"
fi
if grep -qx 'User=telemine' "$unit"; then
  ok "User=telemine"
else
  fail "the unit must run as User=telemine"
fi
if grep -qE '^RestartPreventExitStatus=(.* )?1( |$)' "$unit"; then
  ok "exit 1 (config, SQL or permissions to fix) is not restarted"
else
  fail "RestartPreventExitStatus must hold 1: restarting cannot fix the config"
fi
# shellcheck disable=SC2016 # $MAINPID is systemd's, not ours
if grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$unit"; then
  ok "reload is SIGHUP"
else
  fail "ExecReload must send SIGHUP (the engine reloads its SQL on it)"
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  fail "systemd-analyze is not installed (Debian: apt-get install systemd); the unit is unverified"
elif [ -z "$binary" ]; then
  fail "no binary to point ExecStart at, so systemd-analyze verify cannot run"
else
  # verify requires ExecStart's program to exist and be executable; point it
  # at the binary in the temporary root. It also exits 0 on unknown keys,
  # only printing them: any output is a failure.
  mkdir -p "$work/unit"
  sed "s#$image_binary#$root$image_binary#g" "$unit" >"$work/unit/telemine.service"
  if systemd-analyze verify "$work/unit/telemine.service" >"$work/verify.log" 2>&1 && [ ! -s "$work/verify.log" ]; then
    ok "systemd-analyze verify: no complaint ($(systemd-analyze --version | head -n 1))"
  else
    fail "systemd-analyze verify complains about $unit:"
    sed "s#$work/unit/#packaging/#; s/^/        /" "$work/verify.log"
  fi
  if exposure=$(systemd-analyze security --offline=true "$work/unit/telemine.service" 2>/dev/null | grep 'Overall exposure'); then
    note "systemd-analyze security: ${exposure#→ }"
  fi
fi

# ---------------------------------------------------------------------------
echo
if [ "$failures" -eq 0 ]; then
  echo "container-check: PASS ($mode mode)"
  if [ "$mode" = static ]; then
    echo "  no image was built: a container engine is needed for that (packaging/README.md, 'What is checked here')"
  fi
else
  echo "container-check: FAIL ($mode mode): $failures problem(s), each marked FAIL above"
  exit 1
fi
