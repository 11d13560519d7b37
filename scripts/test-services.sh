# Source me (bash): installs, where missing, and starts the services the store and report tests
# need — a throwaway PostgreSQL server on loopback and headless Chromium — and exports
#   KSMITH_TEST_PG_URL   admin URL of the test server (tests create and drop their own databases)
#   KSMITH_TEST_CHROMIUM path of the chromium binary
# Quick when everything is present. Installing needs root (as in CI); otherwise it says what is
# missing and the tests skip with a message (outside CI) or fail (CI=true).
#
#   source scripts/test-services.sh && cargo test -p bench-suite
#
# Knobs: KSMITH_TEST_PG_PORT (default 55432), KSMITH_TEST_PG_DIR (default /tmp/ksmith-test-pg).

# The newest installed server's bin directory (Debian: /usr/lib/postgresql/VERSION/bin), or "".
ksmith_find_pgbin() {
    local d best="" ver bestver=0
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] || continue
        ver=${d#/usr/lib/postgresql/}
        ver=${ver%%/*}
        ver=${ver%%.*}
        case $ver in '' | *[!0-9]*) ver=0 ;; esac
        if [ "$ver" -ge "$bestver" ]; then
            best=$d
            bestver=$ver
        fi
    done
    echo "$best"
}

ksmith_services() {
    # Written to survive the caller's `set -euo pipefail` (scripts/test.sh): no failing pipelines,
    # every test guarded.
    local missing=() pgbin="" port="${KSMITH_TEST_PG_PORT:-55432}" dir="${KSMITH_TEST_PG_DIR:-/tmp/ksmith-test-pg}"
    pgbin=$(ksmith_find_pgbin)
    [ -n "$pgbin" ] || missing+=(postgresql)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "test-services: installing ${missing[*]} (Debian packages)"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                    "${missing[@]}" >/dev/null ||
                echo "test-services: apt-get install ${missing[*]} failed" >&2
            pgbin=$(ksmith_find_pgbin)
        else
            echo "test-services: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
        fi
    fi

    if command -v chromium >/dev/null 2>&1; then
        export KSMITH_TEST_CHROMIUM
        KSMITH_TEST_CHROMIUM=$(command -v chromium)
        echo "test-services: chromium at $KSMITH_TEST_CHROMIUM"
    fi

    [ -n "$pgbin" ] || return 0
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user the package made.
    local run=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "test-services: no postgres user" >&2; return 0; }
        run=(runuser -u postgres --)
    fi
    if ! "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
        mkdir -p "$dir"
        if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
        if [ ! -f "$dir/data/PG_VERSION" ]; then
            "${run[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
                { echo "test-services: initdb failed, see $dir/initdb.log" >&2; return 0; }
        fi
        # Loopback only, no fsync: a disposable server for tests.
        "${run[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
            start >/dev/null ||
            { echo "test-services: PostgreSQL did not start, see $dir/server.log" >&2; return 0; }
    fi
    export KSMITH_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "test-services: PostgreSQL at $KSMITH_TEST_PG_URL"
}

ksmith_services
unset -f ksmith_services ksmith_find_pgbin
