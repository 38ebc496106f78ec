#!/usr/bin/env python3
"""Drives the real `xnat` (xnatpy 0.8.x) client against registrar's XNAT adapter.

Run by the Rust integration tests (with the virtualenv's python) as:

    drive_xnatpy.py --url http://127.0.0.1:PORT --admin-user A --admin-password PA \
        --user U --user-password PU --project P [--par-project P_PAR]

Preconditions set up by the caller: U is an ordinary user, P a project owned
by A, and an open invitation (project access request) for U to --par-project
(default `<project>_PAR`).

Every check is a plain `assert`; on success the last line is `N passed, 0 failed`
and the exit code is 0, otherwise a traceback is printed and the exit code is 1.

What `xnat.connect(url, user=, password=, no_parse_model=True)` sends
(xnat/__init__.py `connect`, xnat/session.py `BaseXNATSession.__init__`):
  1. GET {url}                 any status, redirects followed (detect_redirect)
  2. PUT /data/services/auth   form body username=..&password=..; must be 200,
                               the body is the session id; JSESSIONID cookie
  3. GET /data/auth            must not be 401; must contain "User '<login>' is logged in"
  4. GET /data/JSESSION        heartbeat, must be 200 and not start with <html>/<!DOCTYPE
xnatpy never sends an Authorization header after login: only the cookie.
`session.disconnect()` (and leaving a `with` block) sends DELETE /data/JSESSION
with `Connection: close`; it must answer 200.
"""

import argparse
import os
import signal
import sys
import traceback

# Only --url may be contacted: make sure no proxy from the environment is used.
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"
# xnatpy falls back on these (and on ~/.netrc) only when an argument is missing;
# clear them so nothing but the command line decides who logs in.
for _var in ("XNATPY_HOST", "XNAT_HOST", "XNATPY_USER", "XNAT_USER", "XNATPY_PASS", "XNAT_PASS", "XNAT_DATA"):
    os.environ.pop(_var, None)

import requests  # noqa: E402  (after the environment clean-up on purpose)
import xnat  # noqa: E402
from xnat import exceptions  # noqa: E402
from xnat.core import XNATObject  # noqa: E402
from xnat.mixin import ProjectData as ProjectDataMixin  # noqa: E402

PASSED = 0


def check(name, cond, detail=""):
    """One counted check: a plain assert plus a progress line."""
    global PASSED
    assert cond, "%s failed: %s" % (name, detail)
    PASSED += 1
    print("ok %d - %s" % (PASSED, name), flush=True)


class ProjectData(ProjectDataMixin, XNATObject):
    """The class xnatpy's generated model would register for xnat:projectData.

    With no_parse_model=True xnatpy builds no classes from the server's XSDs, so
    `session.projects[...]` fails with KeyError('xnat:projectData') in
    `create_object`. This is the same shape the model generator writes
    (xnat/convert_xsd.py `header`/`init`: `class ProjectData(mixin.ProjectData,
    XNATObject)` plus the `name` secondary lookup), so `project.users`,
    `project.set_access` and `project.remove_access` run xnatpy's own code.
    """

    _XSI_TYPE = "xnat:projectData"

    def __init__(self, uri=None, xnat_session=None, id_=None, datafields=None, parent=None, name=None, **kwargs):
        super().__init__(uri=uri, xnat_session=xnat_session, id_=id_, datafields=datafields, parent=parent,
                         name=name, **kwargs)
        if name is not None:
            self._cache["name"] = name


def connect(args, user, password):
    """With --parse-model, xnatpy's default: it reads GET /xapi/schemas, each
    GET /xapi/schemas/{name} and GET /data/search/elements, and generates its
    classes (xnat:projectData among them) from registrar's own schemas.
    Without, no_parse_model=True and the hand-made ProjectData above."""
    session = xnat.connect(
        args.url,
        user=user,
        password=password,
        no_parse_model=not args.parse_model,
        default_timeout=args.timeout,
        pilot_timeout=args.timeout,
        loglevel="WARNING",
    )
    if not args.parse_model:
        session.XNAT_CLASS_LOOKUP["xnat:projectData"] = ProjectData
    return session


def session_is_dead(args, cookie):
    """After logout the old JSESSIONID alone must no longer authenticate."""
    r = requests.get(args.url.rstrip("/") + "/data/auth", cookies={"JSESSIONID": cookie}, timeout=args.timeout)
    return r.status_code == 401, "GET /data/auth with the old cookie gave %s %r" % (r.status_code, r.text[:200])


def open_pars_for(session, project):
    """GET /data/pars?format=json through the client's raw helper (xnatpy has no PAR API)."""
    data = session.get_json("/data/pars")
    rows = data["ResultSet"]["Result"]
    assert isinstance(rows, list), data
    return rows, [r for r in rows if r.get("proj_id") == project]


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
    ap.add_argument("--parse-model", action="store_true",
                    help="connect in xnatpy's default mode (build the model from the server's schemas)")
    ap.add_argument("--deadline", type=int, default=180, help="whole-run limit in seconds")
    args = ap.parse_args()
    par_project = args.par_project or args.project + "_PAR"

    # A hung server must not hang the Rust test.
    def on_alarm(signum, frame):
        raise TimeoutError("drive_xnatpy.py did not finish within %ss" % args.deadline)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)

    # a) log in as the admin (GET /, PUT /data/services/auth, GET /data/auth,
    #    GET /data/JSESSION heartbeat).
    admin = connect(args, args.admin_user, args.admin_password)
    check("admin connect: logged_in_user", admin.logged_in_user == args.admin_user, admin.logged_in_user)
    admin_cookie = admin.interface.cookies.get("JSESSIONID")
    check("admin connect: JSESSIONID cookie set by the server", bool(admin_cookie), dict(admin.interface.cookies))
    check("admin connect: session id body equals the cookie", admin.jsession == admin_cookie,
          (admin.jsession, admin_cookie))
    check("xnat_version is 1.x (GET /data/version)", admin.xnat_version.startswith("1."), admin.xnat_version)
    check("xnat_build_info has a version (GET /data/buildInfo, else /xapi/siteConfig/buildInfo)",
          bool(admin.xnat_build_info), admin.xnat_build_info)

    # b) list users: GET /data/users?format=json, keyed by `login`.
    users = admin.users
    check("session.users lists --user", args.user in users, list(users))
    check("session.users lists --admin-user", args.admin_user in users, list(users))

    # c) the user's profile from the same listing.
    u = users[args.user]
    check("user.login", u.login == args.user, u.login)
    check("user.first_name is non-empty", isinstance(u.first_name, str) and u.first_name != "", repr(u.first_name))
    check("user.last_name is a string", isinstance(u.last_name, str), repr(u.last_name))
    check("user.email looks like an e-mail", isinstance(u.email, str) and "@" in u.email, repr(u.email))
    check("user.id is non-empty", bool(u.id), repr(u.id))

    # d) add the user to the project. xnatpy's `set_access(user, level)` sends
    #    PUT {project.uri}/users/{level}/{login} with `level` verbatim; its own
    #    `remove_access` uses the listing's `displayname` ('Members'), so use that.
    projects = admin.projects  # GET /data/archive/projects?columns=ID,URI,name&format=json
    check("session.projects lists --project", args.project in projects, list(projects.keys()))
    project = projects[args.project]
    check("project.id", project.id == args.project, project.id)
    check("project.uri", project.uri == "/data/projects/" + args.project, project.uri)
    if args.parse_model:
        generated = admin.XNAT_CLASS_LOOKUP.get("xnat:projectData")
        check("the model generated xnat:projectData from registrar's schema",
              generated is not None and generated is not ProjectData, generated)
        check("the project is an instance of the generated class", isinstance(project, generated), type(project))
        check("project.name (a field the schema declares) reads the listing", isinstance(project.name, str)
              and project.name != "", repr(project.name))
        check("projects can be looked up by name too", project.name in projects, list(projects.keys()))
    project.set_access(args.user, "Members")

    # e) the project's users: GET /data/projects/{P}/users?format=json.
    #    (`project.users` builds a fresh, uncached listing on every access.)
    members = project.users
    check("project.users lists --user", args.user in members, list(members))
    check("--user's access_level (displayname) is 'Members'", members[args.user].access_level == "Members",
          members[args.user].data)
    check("--user's group (GROUP_ID) is the member group", str(members[args.user].group).lower().endswith("member"),
          members[args.user].data)
    check("--admin-user's access_level is 'Owners'",
          args.admin_user in members and members[args.admin_user].access_level == "Owners",
          {k: v.data for k, v in members.items()})
    # remove_access needs the User object (given a plain string it fails inside
    # xnatpy); it sends DELETE {project.uri}/users/{displayname}/{login}.
    project.remove_access(members[args.user])
    check("after remove_access the user is gone", args.user not in project.users, list(project.users))
    project.set_access(args.user, "Members")
    check("after re-adding the user is a member again",
          args.user in project.users and project.users[args.user].access_level == "Members", list(project.users))

    # f) as the user: open invitations through the raw helpers.
    #    session.get_json -> GET /data/pars?format=json (status must be 200);
    #    session.put -> PUT /data/pars/{id}?accept=true (status must be 200 or 201).
    with connect(args, args.user, args.user_password) as user:
        check("user connect: logged_in_user", user.logged_in_user == args.user, user.logged_in_user)
        user_cookie = user.interface.cookies.get("JSESSIONID")
        rows, mine = open_pars_for(user, par_project)
        check("GET /data/pars?format=json has at least one row", len(rows) >= 1, rows)
        check("an open invitation to --par-project is listed", len(mine) == 1, rows)
        par_id = str(mine[0]["par_id"])
        check("the invitation has a par_id", par_id != "", mine[0])
        response = user.put("/data/pars/%s" % par_id, query={"accept": "true"})
        check("PUT /data/pars/{id}?accept=true accepted", response.status_code in (200, 201), response.status_code)
        rows, mine = open_pars_for(user, par_project)
        check("the accepted invitation is no longer open", mine == [], rows)
    # g) leaving the `with` block disconnected: DELETE /data/JSESSION.
    check("user session closed on leaving the with block", user.interface is None)
    dead, detail = session_is_dead(args, user_cookie)
    check("user logout ended the session", dead, detail)

    check("--user is now in --par-project's users", args.user in admin.projects[par_project].users,
          list(admin.projects[par_project].users))

    admin.disconnect()
    check("admin disconnect() closed the client", admin.interface is None)
    dead, detail = session_is_dead(args, admin_cookie)
    check("admin disconnect() ended the session", dead, detail)

    # h) a wrong password (and an unknown login) is refused: PUT /data/services/auth
    #    answers non-200 and xnatpy raises XNATLoginFailedError (an XNATAuthError).
    for who, password in ((args.user, args.user_password + "-wrong"), ("no-such-user-xyz", "whatever")):
        try:
            session = connect(args, who, password)
        except exceptions.XNATLoginFailedError as e:
            check("login %r with a bad password raises XNATLoginFailedError" % who, True, str(e))
        else:
            session.disconnect()
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
