#!/usr/bin/env python3
"""Drives the real `pyxnat` client (1.6.x) against registrar's XNAT adapter.

Run by the Rust integration tests (with the virtualenv's python) as:

    drive_pyxnat.py --url http://127.0.0.1:PORT --admin-user A --admin-password PA \
        --user U --user-password PU --project P [--par-project P_PAR]

Preconditions set up by the caller: U is an ordinary user, P a project owned
by A, and an open invitation (project access request) for U to --par-project
(default `<project>_PAR`).

Every check is a plain `assert`; on success the last line is `N passed, 0 failed`
and the exit code is 0, otherwise a traceback is printed and the exit code is 1.

What pyxnat sends (read from pyxnat/core/interfaces.py):
  * `Interface(...)` itself sends nothing. The first `_exec` calls
    `_get_entry_point()`, which sends `GET /data/JSESSION` with HTTP Basic.
    A 2xx whose body does not start with `<!DOCTYPE`/`<html>` makes the entry
    point `/data`; any error whose message contains `/data/JSESSION` is
    swallowed and pyxnat falls back to the XNAT 1.4 entry point `/REST`.
  * Every later request carries Basic auth (requests.Session.auth) and the
    `JSESSIONID` cookie the server set (requests' cookie jar).
  * Tables are read with `?format=csv` (`_get_json` rewrites `format=json`)
    and parsed with the csv module: the first line must be the header.
  * A failure whose body is exactly `The request requires user authentication`
    raises `OperationalError('Authentication failed')` (pyxnat/core/errors.py).
"""

import argparse
import os
import signal
import sys
import traceback

# Only --url may be contacted: make sure no proxy from the environment is used
# (pyxnat reads `http_proxy` itself, requests reads the others).
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"

import requests  # noqa: E402  (after the proxy clean-up on purpose)
import pyxnat  # noqa: E402
from pyxnat.core.errors import DatabaseError, OperationalError  # noqa: E402
from pyxnat.core.jsonutil import JsonTable  # noqa: E402

PASSED = 0


def check(name, cond, detail=""):
    """One counted check: a plain assert plus a progress line."""
    global PASSED
    assert cond, "%s failed: %s" % (name, detail)
    PASSED += 1
    print("ok %d - %s" % (PASSED, name), flush=True)


def with_timeout(interface, seconds):
    """pyxnat has no timeout option: give its requests.Session a default one.

    `Interface.__init__` sends no request, so patching right after it covers
    every call pyxnat makes.
    """
    http = interface._http
    original = http.request

    def request(method, url, **kwargs):
        kwargs.setdefault("timeout", seconds)
        return original(method, url, **kwargs)

    http.request = request
    return interface


def login(args, user, password):
    return with_timeout(pyxnat.Interface(server=args.url, user=user, password=password), args.timeout)


def jsession_cookie(interface):
    return interface._http.cookies.get("JSESSIONID")


def session_is_dead(args, cookie):
    """After logout the old JSESSIONID alone must no longer authenticate."""
    r = requests.get(args.url.rstrip("/") + "/data/auth", cookies={"JSESSIONID": cookie}, timeout=args.timeout)
    return r.status_code == 401, "GET /data/auth with the old cookie gave %s %r" % (r.status_code, r.text[:200])


def result_rows(response):
    """Rows of an XNAT JSON table: {"ResultSet": {"Result": [...], ...}}."""
    assert response.status_code == 200, "status %s: %r" % (response.status_code, response.text[:300])
    body = response.json()
    rows = body["ResultSet"]["Result"]
    assert isinstance(rows, list), body
    return rows


def open_pars_for(rows, project):
    return [r for r in rows if r.get("proj_id") == project]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--admin-user", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--user-password", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--par-project", default=None, help="project the user is invited to (default <project>_PAR)")
    ap.add_argument("--timeout", type=float, default=15.0, help="per-request timeout in seconds")
    ap.add_argument("--deadline", type=int, default=180, help="whole-run limit in seconds")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")  # pyxnat's join_uri would otherwise send `//data/...`
    par_project = args.par_project or args.project + "_PAR"

    # A hung server must not hang the Rust test.
    def on_alarm(signum, frame):
        raise TimeoutError("drive_pyxnat.py did not finish within %ss" % args.deadline)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)

    # a) log in as the admin. The first real call performs the login:
    #    GET /data/JSESSION with Basic -> session id as text + JSESSIONID cookie.
    admin = login(args, args.admin_user, args.admin_password)
    check("admin login: entry point is /data (GET /data/JSESSION accepted)", admin._get_entry_point() == "/data",
          "entry point %r (pyxnat fell back to /REST: GET /data/JSESSION failed)" % admin._entry)
    admin_cookie = jsession_cookie(admin)
    check("admin login: JSESSIONID cookie set", bool(admin_cookie), dict(admin._http.cookies))
    check("admin login: session id in the body matches the cookie",
          admin._jsession == "JSESSIONID=" + str(admin_cookie.encode()), (admin._jsession, admin_cookie))

    # b) list users: GET /data/users?format=csv, column `login`.
    logins = admin.manage.users()
    check("manage.users() lists --user", args.user in logins, logins)
    check("manage.users() lists --admin-user", args.admin_user in logins, logins)
    raw = result_rows(admin.get("/data/users?format=json"))
    check("GET /data/users?format=json agrees with the CSV listing",
          sorted(r["login"] for r in raw) == sorted(logins), (raw, logins))

    # c) the user's profile, through the same table (where login == --user).
    users = admin.manage.users
    firstname, lastname, email, uid = (users.firstname(args.user), users.lastname(args.user),
                                       users.email(args.user), users.id(args.user))
    check("users.firstname() is a non-empty string", isinstance(firstname, str) and firstname != "", repr(firstname))
    check("users.lastname() is a string", isinstance(lastname, str), repr(lastname))
    check("users.email() looks like an e-mail", isinstance(email, str) and "@" in email, repr(email))
    check("users.id() is a non-empty string", isinstance(uid, str) and uid != "", repr(uid))

    # d) add the user to the project as a member. pyxnat maps role='member' to
    #    the group display name: PUT /data/projects/{P}/users/Members/{login}.
    projects = admin.select.projects().get()  # GET /data/projects?format=csv&columns=ID,xsiType
    check("select.projects().get() lists --project", args.project in projects, projects)
    project = admin.select.project(args.project)
    check("project.exists()", project.exists())
    check("--admin-user is an owner of --project", args.admin_user in project.owners(), project.owners())
    project.add_user(args.user, role="member")

    # e) the project's users: GET /data/projects/{P}/users?format=csv,
    #    columns GROUP_ID,displayname,login,... (displayname Owners/Members/Collaborators).
    check("project.users() lists --user", args.user in project.users(), project.users())
    check("project.members() lists --user", args.user in project.members(), project.members())
    check("project.collaborators() does not list --user", args.user not in project.collaborators())
    check("project.user_role() is 'member'", project.user_role(args.user) == "member", project.user_role(args.user))
    # remove_user looks the role up, then DELETE /data/projects/{P}/users/Members/{login}.
    project.remove_user(args.user)
    check("after remove_user the user is gone", args.user not in project.users(), project.users())
    project.add_user(args.user, role="member")
    check("after re-adding the user is a member again", project.user_role(args.user) == "member",
          project.user_role(args.user))

    # f) as the user: open invitations with the raw helpers (pyxnat has no PAR API).
    #    Interface.get/put return the requests.Response unchecked.
    user = login(args, args.user, args.user_password)
    check("user login: entry point is /data", user._get_entry_point() == "/data", user._entry)
    user_cookie = jsession_cookie(user)
    rows = result_rows(user.get("/data/pars?format=json"))
    check("GET /data/pars?format=json has at least one row", len(rows) >= 1, rows)
    mine = open_pars_for(rows, par_project)
    check("an open invitation to --par-project is listed", len(mine) == 1, rows)
    par_id = str(mine[0]["par_id"])
    check("the invitation has a par_id", par_id != "", mine[0])
    # The same table the pyxnat way (?format=csv through the csv module).
    csv_rows = JsonTable(user._get_json("/data/pars")).where(proj_id=par_project)
    check("GET /data/pars?format=csv lists the same invitation", csv_rows.get("par_id", always_list=True) == [par_id],
          csv_rows.data)
    r = user.put("/data/pars/%s?accept=true" % par_id)
    check("PUT /data/pars/{id}?accept=true succeeds", 200 <= r.status_code < 300, "%s %r" % (r.status_code, r.text[:300]))
    rows = result_rows(user.get("/data/pars?format=json"))
    check("the accepted invitation is no longer open", open_pars_for(rows, par_project) == [], rows)
    check("--user is now in --par-project's users", args.user in admin.select.project(par_project).users(),
          admin.select.project(par_project).users())

    # g) log out: DELETE /data/JSESSION (pyxnat needs a 2xx without an HTML body).
    user.disconnect()
    dead, detail = session_is_dead(args, user_cookie)
    check("user disconnect() ended the session", dead, detail)
    admin.disconnect()
    dead, detail = session_is_dead(args, admin_cookie)
    check("admin disconnect() ended the session", dead, detail)

    # h) a wrong password (and an unknown login) is refused with pyxnat's
    #    authentication error, raised by the first request (GET /data/JSESSION).
    for who, password in ((args.user, args.user_password + "-wrong"), ("no-such-user-xyz", "whatever")):
        bad = login(args, who, password)
        try:
            bad.manage.users()
        except OperationalError as e:
            check("login %r with a bad password raises OperationalError" % who, "Authentication failed" in str(e), str(e))
        except DatabaseError as e:
            raise AssertionError(
                "pyxnat raised %s instead of OperationalError('Authentication failed'): the 401 body of "
                "GET /data/JSESSION must be exactly 'The request requires user authentication'. %s"
                % (type(e).__name__, e)
            )
        else:
            raise AssertionError("login %r with a bad password was accepted" % who)

    signal.alarm(0)
    print("%d passed, 0 failed" % PASSED)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise  # argparse usage errors keep their own message and code
    except BaseException:  # noqa: BLE001 - report anything, then fail
        traceback.print_exc()
        print("%d passed, 1 failed" % PASSED)
        sys.exit(1)
