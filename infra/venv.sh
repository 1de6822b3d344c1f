# Shared by the install scripts: a server's own virtual environment, installed once from the
# package registry, two installs at once taking turns. Sourced, not run.
#   install_venv NAME VERSION VENV PIP_SPEC CHECK_COMMAND...
# CHECK_COMMAND runs with VENV's bin first on PATH; the install counts only once it succeeds.
install_venv() {
  local name=$1 version=$2 venv=$3 spec=$4; shift 4
  local py=${PYTHON:-python3.11} log
  command -v "$py" >/dev/null 2>&1 || py=python3
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"   # two installs at once (two test workers, two terminals) take turns
  flock 9
  if [ -f "$venv/.complete" ]; then
    echo "$name $version already installed in $venv"; return 0
  fi
  echo "installing $name $version into $venv (first time only)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  log=$(mktemp)
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" >"$log" 2>&1; then
    grep -v "is neither a file nor a directory" "$log" >&2; rm -f "$log"
    echo "error: could not install $spec; check access to the package registry" >&2
    return 1
  fi
  rm -f "$log"
  PATH="$venv/bin:$PATH" "$@" >/dev/null 2>&1 || {
    echo "error: $name does not run from $venv" >&2; return 1; }
  touch "$venv/.complete"
  echo "$name $version installed in $venv"
}
