#!/usr/bin/env bash
# Build the Docker image for real and prove that it serves /analyze, with no Docker engine.
#
#   sudo bash deploy/check_container.sh      # root; needs podman and debootstrap (apt-get install podman debootstrap)
#
# 1. base   a local Debian bookworm base image (debootstrap + python3 3.11 + venv), imported as
#           $BASE_IMAGE and kept as a cache (python:3.11-slim cannot be pulled where no registry is reachable).
# 2. build  podman build --isolation chroot of ./Dockerfile on that base: every RUN step runs for real
#           (apt-get, the venv, pip install of CPU torch and requirements-app.txt). The CPU torch wheel comes
#           from $TORCH_WHEEL through ./wheels/ when that file exists, else from PyTorch's CPU index.
# 3. mount  the image's filesystem (podman image mount) under a writable overlay: podman run cannot
#           start containers on some hosts (crun: setrlimit not permitted), chroot can.
# 4. run    the image's own CMD, Env, WorkingDir and User under chroot, in a network namespace of its
#           own with loopback only (so: no download at start-up), on 127.0.0.1:$PORT; wait until the
#           image's HEALTHCHECK passes (deploy/healthcheck.py: the model answers /health); the runtime
#           user must not be able to change the code or the model.
# 5. api    gradio_client calls /analyze on tests/assets/astronaut.jpg: one face, 7 probabilities
#           summing to 1.
# Then the server is stopped and everything is removed (mounts, the overlay's files, the image)
# except the base image, and the build cache when EMOTION_VIT_KEEP_BUILD_CACHE=1.
# Exits 0 with "SKIPPED: reason" when it cannot run here (not root, no podman or debootstrap).
#
# Environment: CLIENT_PYTHON (a Python with gradio_client; default .venv/bin/python, else python3),
# BASE_IMAGE (default localhost/emotion-vit-base:bookworm), DEBIAN_MIRROR, TORCH_WHEEL, PORT,
# STARTUP_TIMEOUT (seconds, default 300), EMOTION_VIT_KEEP_BUILD_CACHE (1: keep the built image and
# its layers so a rerun is fast).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-localhost/emotion-vit-base:bookworm}
IMAGE=localhost/emotion-vit:check
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_WHEEL=${TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-300}
KEEP_BUILD_CACHE=${EMOTION_VIT_KEEP_BUILD_CACHE:-0}
if [ -z "${CLIENT_PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then CLIENT_PYTHON=.venv/bin/python; else CLIENT_PYTHON=python3; fi
fi

skip() { echo "SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (podman build --isolation chroot, chroot, mounts)"
command -v podman >/dev/null || skip "podman is not installed (apt-get install -y podman)"
for tool in unshare nsenter chroot ip; do command -v $tool >/dev/null || skip "$tool is not installed"; done
if ! podman image exists "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install -y debootstrap)"
fi
"$CLIENT_PYTHON" -c "import gradio_client" 2>/dev/null || { echo "FAIL: $CLIENT_PYTHON has no gradio_client" >&2; exit 1; }
[ -f models/emotion-vit-fer2013/config.json ] || { echo "FAIL: the embedded model models/emotion-vit-fer2013/ is missing" >&2; exit 1; }

work=$(mktemp -d /var/tmp/emotion-vit-check.XXXXXX)
root=$work/rootfs
server_pid="" image_mounted="" made_wheels_dir="" linked_wheel=""
t_start=$(date +%s.%N); t_phase=$t_start
phase() {  # phase NAME: prints the time of the phase that just ended
  local now; now=$(date +%s.%N)
  awk -v a="$t_phase" -v b="$now" -v n="$1" 'BEGIN { printf "== %-7s %6.1f s\n", n, b - a }'
  t_phase=$now
}

cleanup() {
  set +e
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    for _ in $(seq 20); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  for m in "$root/dev/shm" "$root/dev" "$root/proc" "$root"; do
    mountpoint -q "$m" 2>/dev/null && { umount "$m" || umount -l "$m"; }
  done
  [ -n "$image_mounted" ] && podman image unmount "$IMAGE" >/dev/null 2>&1
  image_mounted=""
  # Only delete the folder when nothing is mounted under it any more.
  if ! grep -q " $work/" /proc/mounts; then rm -rf "$work"; else echo "WARNING: still mounted under $work" >&2; fi
  [ -n "$linked_wheel" ] && rm -f "$linked_wheel"
  [ -n "$made_wheels_dir" ] && rmdir wheels 2>/dev/null
  linked_wheel="" made_wheels_dir=""
  if [ "$KEEP_BUILD_CACHE" != 1 ] && podman image exists "$IMAGE"; then
    podman rmi -f "$IMAGE" >/dev/null 2>&1
    # the build's intermediate layers (untagged, labelled by the Dockerfile's stages)
    podman image prune -f --filter "label=emotion-vit.check=1" >/dev/null 2>&1
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. base image: Debian bookworm with python3 (3.11) and venv -------------------------------------
if podman image exists "$BASE_IMAGE"; then
  echo "base image $BASE_IMAGE: cached"
else
  echo "base image $BASE_IMAGE: debootstrap bookworm from $DEBIAN_MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/base" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; echo "FAIL: debootstrap" >&2; exit 1; }
  rm -rf "$work/base/var/cache/apt/archives/"*.deb "$work/base/var/lib/apt/lists/"*
  tar -C "$work/base" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$work/base"
fi
phase base

# --- 2. build ----------------------------------------------------------------------------------------
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [ -f "$TORCH_WHEEL" ]; then  # offline: the CPU wheel through ./wheels/, the rest from PyPI
  [ -d wheels ] || { mkdir wheels; made_wheels_dir=1; }
  if [ ! -e "wheels/$(basename "$TORCH_WHEEL")" ]; then
    linked_wheel="wheels/$(basename "$TORCH_WHEEL")"
    ln "$TORCH_WHEEL" "$linked_wheel" 2>/dev/null || cp "$TORCH_WHEEL" "$linked_wheel"
  fi
  build_args+=(--build-arg "TORCH_INDEX_URL=")
  echo "torch: $(basename "$TORCH_WHEEL") from ./wheels/"
fi
volumes=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then  # the host's CAs (a TLS-intercepting proxy's included)
  volumes+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
  build_args+=(--build-arg "PIP_EXTRA_ARGS=--cert /run/host-ca.crt")
fi
if ! podman build --isolation chroot --network host --format docker --layers --label emotion-vit.check=1 \
     "${build_args[@]}" "${volumes[@]}" -t "$IMAGE" . >"$work/build.log" 2>&1; then
  tail -30 "$work/build.log" >&2; echo "FAIL: podman build" >&2; exit 1
fi
grep -E '^torch |^Successfully tagged' "$work/build.log" || true
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
awk -v s="$size" -v i="$IMAGE" 'BEGIN { printf "image %s: %.0f bytes (%.2f GB, uncompressed)\n", i, s, s / 1e9 }'
phase build

# --- 3. the image's filesystem, read-only, under a writable overlay -----------------------------------
podman image inspect "$IMAGE" >"$work/image.json"
lower=$(podman image mount "$IMAGE"); image_mounted=1
mkdir -p "$root" "$work/upper" "$work/overlay-work"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
phase mount

# --- 4. run the image's CMD under chroot, with loopback-only networking --------------------------------
read_config() { "$CLIENT_PYTHON" - "$work/image.json" "$root" "$@" <<'EOF'
import json, sys
image = json.load(open(sys.argv[1]))[0]
config = image["Config"]
root, what = sys.argv[2], sys.argv[3]
if what == "env":
    print("\0".join(config.get("Env") or []), end="")
elif what == "cmd":
    print("\0".join((config.get("Entrypoint") or []) + (config.get("Cmd") or [])), end="")
elif what == "workdir":
    print(config.get("WorkingDir") or "/")
elif what == "healthcheck":
    test = (image.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] not in ("CMD", "CMD-SHELL"):
        sys.exit("the image has no HEALTHCHECK")
    print("\0".join(test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]), end="")
elif what == "user":
    user = (config.get("User") or "root").split(":")[0]
    if user.isdigit():
        print(f"{user}:{user}")
    else:
        for line in open(f"{root}/etc/passwd"):
            name, _, uid, gid, *_ = line.split(":")
            if name == user:
                print(f"{uid}:{gid}")
                break
        else:
            sys.exit(f"user {user!r} not in the image")
EOF
}
mapfile -d '' image_env < <(read_config env)
mapfile -d '' image_cmd < <(read_config cmd)
mapfile -d '' health_cmd < <(read_config healthcheck)
workdir=$(read_config workdir)
userspec=$(read_config user)
echo "image: user $userspec, workdir $workdir, cmd ${image_cmd[*]}; healthcheck ${health_cmd[*]:0:2} ..."
[ ${#image_cmd[@]} -gt 0 ] || { echo "FAIL: the image has no CMD" >&2; exit 1; }
[ ${#health_cmd[@]} -gt 0 ] || { echo "FAIL: the image has no HEALTHCHECK" >&2; exit 1; }
[ "${userspec%%:*}" = 1000 ] || { echo "FAIL: the image runs as uid ${userspec%%:*}, not 1000" >&2; exit 1; }

port=${PORT:-$(
  "$CLIENT_PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
in_chroot=(chroot --userspec="$userspec" "$root" /usr/bin/env -i --chdir="$workdir"
           "${image_env[@]}" GRADIO_SERVER_NAME=127.0.0.1 "GRADIO_SERVER_PORT=$port")
unshare --net -- /bin/sh -c 'ip link set lo up && exec "$@"' sh "${in_chroot[@]}" "${image_cmd[@]}" \
  >"$work/server.log" 2>&1 &
server_pid=$!

echo "server: pid $server_pid on 127.0.0.1:$port (own network namespace, loopback only)"
deadline=$((SECONDS + STARTUP_TIMEOUT))
until nsenter --net="/proc/$server_pid/ns/net" -- "${in_chroot[@]}" "${health_cmd[@]}" >/dev/null 2>&1; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    tail -30 "$work/server.log" >&2; echo "FAIL: the server exited" >&2; exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    tail -30 "$work/server.log" >&2; echo "FAIL: no healthy server after ${STARTUP_TIMEOUT}s" >&2; exit 1
  fi
  sleep 1
done
echo "HEALTHCHECK passed (deploy/healthcheck.py: the model answered /health)"
for target in app.py emotion_vit/service.py models/emotion-vit-fer2013/model.safetensors; do
  if "${in_chroot[@]}" /bin/sh -c "test -w '$target' || touch '$target' 2>/dev/null"; then
    echo "FAIL: the runtime user can write $target" >&2; exit 1
  fi
done
"${in_chroot[@]}" /bin/sh -c 'test -w "$GRADIO_TEMP_DIR" && test -w "$EMOTION_VIT_ADAPTERS"' ||
  { echo "FAIL: the runtime user cannot write GRADIO_TEMP_DIR or EMOTION_VIT_ADAPTERS" >&2; exit 1; }
echo "code and model read-only for uid ${userspec%%:*}; it writes only \$GRADIO_TEMP_DIR and \$EMOTION_VIT_ADAPTERS"
phase start

# --- 5. the /analyze API through gradio_client ------------------------------------------------------------
nsenter --net="/proc/$server_pid/ns/net" -- "$CLIENT_PYTHON" - "http://127.0.0.1:$port/" tests/assets/astronaut.jpg <<'EOF'
import math, sys
from gradio_client import Client, handle_file

client = Client(sys.argv[1], verbose=False)
result = client.predict(handle_file(sys.argv[2]), api_name="/analyze")
faces = result["faces"]
assert len(faces) == 1, f"expected one face, got {len(faces)}: {result}"
probabilities = faces[0]["probabilities"]
assert len(probabilities) == 7, probabilities
assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3), probabilities
print(f"/analyze: 1 face, label {faces[0]['label']}, 7 probabilities summing to {sum(probabilities.values()):.4f}; "
      f"model {result['model']}, {result['timings_ms']['total']:.0f} ms")
EOF
phase api

kill -TERM "$server_pid"
t_term=$(date +%s.%N)
for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then echo "FAIL: the server did not stop within 5 s of SIGTERM" >&2; exit 1; fi
awk -v a="$t_term" -v b="$(date +%s.%N)" 'BEGIN { printf "SIGTERM: stopped in %.1f s\n", b - a }'
cleanup
server_pid=""
phase cleanup
awk -v a="$t_start" -v b="$(date +%s.%N)" -v s="$size" 'BEGIN { printf "OK: the image builds, starts as uid 1000 with no network, passes its HEALTHCHECK and answers /analyze (total %.0f s; image %.2f GB)\n", b - a, s / 1e9 }'
