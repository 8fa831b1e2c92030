"""Give a native program (tritonserver, perf_analyzer) a secret argument that no process list shows.

Triton 2.51 reads the admin key only from its command line (`--http-restricted-api=<apis>:<header>=<key>`,
no file or environment option), and /proc/PID/cmdline is readable by every local user. So the command line
carries `PLACEHOLDER` instead, the key travels in the environment (/proc/PID/environ is readable by the same
user only, like a 0600 file), and a tiny library preloaded into the program swaps the placeholder for the key
before main() runs: it points argv[i] at a copy on the heap, while the bytes that /proc/PID/cmdline shows
keep the placeholder. It then overwrites the key in the environment block and removes both variables, so the
python-backend stubs the server starts inherit neither.

The library is compiled once with the system's C compiler into the user's cache.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from minivlm.c_library import CompileError, shared_library
from minivlm.server.discovery import TritonServerError

PLACEHOLDER = "@VLM_SECRET@"
SECRET_ENV = "VLM_SECRET_ARG"

_SOURCE = r"""
#include <stdlib.h>
#include <string.h>

#define PLACEHOLDER "@PLACEHOLDER@"
#define SECRET_ENV "@SECRET_ENV@"

/* glibc calls constructors with main's argc, argv and envp; main then sees the same argv array. */
__attribute__((constructor)) static void substitute_secret(int argc, char **argv, char **envp) {
    (void)envp;
    char *found = getenv(SECRET_ENV);
    if (found == NULL) return;
    char *secret = strdup(found);
    if (secret == NULL) abort();
    memset(found, '*', strlen(found));            /* the bytes /proc/PID/environ shows */
    size_t marker = strlen(PLACEHOLDER), length = strlen(secret);
    for (int i = 0; i < argc; i++) {
        char *at = strstr(argv[i], PLACEHOLDER);
        if (at == NULL) continue;
        size_t head = (size_t)(at - argv[i]), tail = strlen(at + marker);
        char *arg = malloc(head + length + tail + 1);
        if (arg == NULL) abort();
        memcpy(arg, argv[i], head);
        memcpy(arg + head, secret, length);
        memcpy(arg + head + length, at + marker, tail + 1);
        argv[i] = arg;
    }
    unsetenv(SECRET_ENV);
    unsetenv("LD_PRELOAD");                       /* the server's child processes need neither */
}
""".replace("@PLACEHOLDER@", PLACEHOLDER).replace("@SECRET_ENV@", SECRET_ENV)


def secret_argv_library() -> Path:
    """The preload library, compiled on first use (a second process compiling meanwhile is harmless)."""
    try:
        return shared_library("secret_argv", _SOURCE, ["-O2"], folder="secret-argv")
    except CompileError as error:
        raise TritonServerError(f"cannot build the library that keeps the admin key off tritonserver's command "
                                f"line: {error}") from error


def secret_environment(env: dict[str, str], secret: str) -> dict[str, str]:
    """`env` plus what makes the program see `secret` wherever its arguments say PLACEHOLDER."""
    if not secret or PLACEHOLDER in secret:
        raise ValueError("the secret must be non-empty and must not contain the placeholder")
    preload = " ".join(filter(None, [str(secret_argv_library()), env.get("LD_PRELOAD")]))
    return {**env, "LD_PRELOAD": preload, SECRET_ENV: secret}


def exec_with_admin_key(args: list[str], env: dict[str, str] | None = None) -> None:
    """Replace this process with `args`, the admin key wherever they say PLACEHOLDER: the container's way of
    starting tritonserver (docker/entrypoint.sh). The key comes from the file named by $ADMIN_KEY_FILE (a
    mounted secret) or from $ADMIN_KEY; the program inherits neither variable."""
    env = dict(os.environ if env is None else env)
    key_file, key = env.pop("ADMIN_KEY_FILE", ""), env.pop("ADMIN_KEY", "")
    if key_file:
        key = Path(key_file).read_text().strip()
    if not key:
        raise SystemExit("set ADMIN_KEY_FILE (a file holding the admin key) or ADMIN_KEY")
    if not args:
        raise SystemExit("usage: python -m minivlm.server.secret_argv PROGRAM [ARG ...]  (PLACEHOLDER " +
                         PLACEHOLDER + " in an ARG becomes the admin key)")
    os.execvpe(args[0], args, secret_environment(env, key))


if __name__ == "__main__":
    exec_with_admin_key(sys.argv[1:])
