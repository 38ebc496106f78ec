#!/usr/bin/env python3
"""Drives MLTE's own Python client (mlte==2.7.0, HttpUserStore) against registrar's MLTE user API.

Run (with the virtualenv's python) as:

    drive_mlte.py --url http://127.0.0.1:PORT --admin-user A --admin-password PA [--prefix mc] [--deadline 180]

A must be an administrator. Only the client's own classes talk to the server:
`RequestsClient` (its OAuth client), `HttpUserStore` and the user, group and
permission mappers of its session. Names created here start with --prefix.

Every check is a plain `assert`; on success the last line is `N passed, 0 failed`
and the exit code is 0, otherwise a traceback is printed and the exit code is 1.

What the client sends (mlte/store/common/http_clients.py, http_storage.py,
mlte/store/user/underlying/http.py); BASE is --url + "/api":
  login   POST BASE/token, form grant_type=password&username=..&password=..
          (no client_id); needs 200 and JSON with "access_token"; afterwards
          every request carries `Authorization: Bearer <token>`. Never re-authenticates.
  users   POST BASE/user {UserWithPassword}, PUT BASE/user {BasicUser|UserWithPassword},
          GET BASE/user (list of names), GET/DELETE BASE/user/{name}; every body
          back is a User and must carry `hashed_password` (a string).
  groups  POST/PUT BASE/group {Group}, GET BASE/group, GET/DELETE BASE/group/{name}
  perms   GET BASE/groups/permissions (list of "type-method[-id]" strings),
          GET BASE/groups/permissions/s---permissions---details and
          GET BASE/groups/permissions/s---permission---{perm}: the client turns the
          "/" of "s/permissions/details" into "---" (make_valid_url_part), so these
          are the paths it really requests, not MLTE's /groups/permissions/details.
Success must be exactly 200 (201 is an error to the client); errors must be JSON:
404 -> ErrorNotFound, 409 -> ErrorAlreadyExists, 401 -> UnauthenticatedError,
403 -> ForbiddenError, anything else (400 for `me`) -> InternalError; a failed
token request raises a plain Exception("Token request was unsuccessful - code: ...").
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
# mlte's settings (pydantic-settings) read API_PREFIX from the environment or
# ./.env.backend; the client must use MLTE's default "/api".
os.environ.pop("API_PREFIX", None)

import mlte.store.error as errors  # noqa: E402  (after the environment clean-up on purpose)
from mlte.store.base import StoreURI  # noqa: E402
from mlte.store.common import http_storage  # noqa: E402
from mlte.store.common.http_clients import RequestsClient  # noqa: E402
from mlte.store.user.underlying.http import HttpUserStore  # noqa: E402
from mlte.user.model import (  # noqa: E402
    BasicUser,
    Group,
    MethodType,
    Permission,
    ResourceType,
    RoleType,
    User,
    UserWithPassword,
)

PASSED = 0


def check(name, cond, detail=""):
    """One counted check: a plain assert plus a progress line."""
    global PASSED
    assert cond, "%s failed: %s" % (name, detail)
    PASSED += 1
    print("ok %d - %s" % (PASSED, name), flush=True)


def raises(name, exc_type, fn, exact=False):
    """Checks that fn() raises exc_type (exactly that type with exact=True); returns the exception."""
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001
        ok = type(e) is exc_type if exact else isinstance(e, exc_type)
        check(name, ok, "raised %s: %s" % (type(e).__name__, e))
        return e
    raise AssertionError("%s failed: no exception, got %r" % (name, result))


def login(url, user, password):
    """The client's own OAuth flow: RequestsClient + HttpResourceStorage.start_session()
    (POST {url}/api/token). HttpUserStore never logs in by itself; the three
    storages share the one client, so one token serves users, groups and permissions."""
    client = RequestsClient(user, password)
    store = HttpUserStore(uri=StoreURI.from_string(url), client=client)
    store.user_storage.start_session()
    return client, store


def perm(resource_type, method, resource_id=None):
    return Permission(resource_type=resource_type, resource_id=resource_id, method=method)


def perm_key(p):
    return (str(p.resource_type), p.resource_id, str(p.method))


def same_perms(a, b):
    return sorted(map(perm_key, a)) == sorted(map(perm_key, b))


def group_map(groups):
    return {g.name: g for g in groups}


def looks_like_hash(value, password):
    """True if a `hashed_password` could be a real hash (bcrypt/argon2/crypt/pbkdf2) or the password."""
    return password in value or "$" in value or value.startswith("pbkdf2")


def check_user(what, got, want, password, groups):
    """Every field written, compared; `groups` maps each written group name to its current
    permissions. Extra groups the server adds on its own (MLTE gives regular users
    default groups) are allowed; the written ones must be there with their permissions."""
    check("%s: is a User" % what, isinstance(got, User), type(got))
    for field in ("username", "email", "full_name", "disabled", "role"):
        check("%s: %s" % (what, field), getattr(got, field) == getattr(want, field),
              (getattr(got, field), getattr(want, field)))
    have = group_map(got.groups)
    for name, permissions in groups.items():
        check("%s: in group %s" % (what, name), name in have, list(have))
        check("%s: group %s has its current permissions" % (what, name),
              same_perms(have[name].permissions, permissions), (have[name].permissions, permissions))
    check("%s: hashed_password is a string that leaks no hash" % what,
          isinstance(got.hashed_password, str) and not looks_like_hash(got.hashed_password, password),
          repr(got.hashed_password))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--admin-user", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--prefix", default="mc", help="prefix of every user and group created")
    ap.add_argument("--deadline", type=int, default=180, help="whole-run limit in seconds")
    args = ap.parse_args()
    url = args.url.rstrip("/")
    p = args.prefix

    # A hung server must not hang the Rust test.
    def on_alarm(signum, frame):
        raise TimeoutError("drive_mlte.py did not finish within %ss" % args.deadline)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)

    check("the client uses MLTE's API prefix /api", http_storage.API_PREFIX == "/api", http_storage.API_PREFIX)

    # a) log in through the client's OAuth client.
    client, store = login(url, args.admin_user, args.admin_password)
    check("admin login: access token stored", isinstance(client.access_token, str) and client.access_token != "",
          client.access_token)
    check("admin login: Bearer header set", client.headers == {"Authorization": "Bearer " + client.access_token},
          client.headers)
    s = store.session()
    users, groups, perms = s.user_mapper, s.group_mapper, s.permission_mapper

    # b) no token: every call answers 401 -> UnauthenticatedError (the client never re-authenticates).
    anon = HttpUserStore(uri=StoreURI.from_string(url), client=RequestsClient()).session()
    raises("without a token, listing users raises UnauthenticatedError", errors.UnauthenticatedError,
           anon.user_mapper.list_all)
    raises("without a token, reading a group raises UnauthenticatedError", errors.UnauthenticatedError,
           lambda: anon.group_mapper.read("read-model"))

    # c) permissions: MLTE's default set ("type-method" for every resource type).
    perm_names = perms.list_all()
    check("list permissions: a list of strings", isinstance(perm_names, list)
          and all(isinstance(x, str) for x in perm_names), perm_names)
    defaults = [perm(r, m) for r in ResourceType for m in (MethodType.GET, MethodType.POST, MethodType.PUT,
                                                           MethodType.DELETE)]
    missing = [d.to_str() for d in defaults if d.to_str() not in perm_names]
    check("list permissions: every default type-method permission is listed", not missing, missing)

    # d) groups with permissions.
    model_id = p + "-model-1"  # a "-" in an id is serialised as "___" in permission strings
    g1, g2 = p + "_readers", p + "_writers"
    g1_perms = [perm(ResourceType.MODEL, MethodType.GET), perm(ResourceType.CATALOG, MethodType.GET)]
    g2_perms = [perm(ResourceType.MODEL, MethodType.PUT, model_id), perm(ResourceType.MODEL, MethodType.DELETE,
                                                                         model_id)]
    created = groups.create(Group(name=g1, permissions=g1_perms))
    check("create group 1: returns the Group", isinstance(created, Group) and created.name == g1
          and same_perms(created.permissions, g1_perms), created)
    created = groups.create(Group(name=g2, permissions=g2_perms))
    check("create group 2 (model-specific permissions): returns the Group",
          created.name == g2 and same_perms(created.permissions, g2_perms), created)
    got = groups.read(g1)
    check("read group 1: name and permissions", got.name == g1 and same_perms(got.permissions, g1_perms), got)
    got = groups.read(g2)
    check("read group 2: name and permissions", got.name == g2 and same_perms(got.permissions, g2_perms), got)
    names = groups.list_all()
    check("list groups: both listed", g1 in names and g2 in names, names)
    details = group_map(groups.list_details(limit=10_000))
    check("list group details: both with permissions", g1 in details and g2 in details
          and same_perms(details[g1].permissions, g1_perms) and same_perms(details[g2].permissions, g2_perms),
          details.keys())
    raises("creating group 1 again raises ErrorAlreadyExists", errors.ErrorAlreadyExists,
           lambda: groups.create(Group(name=g1, permissions=[])))
    raises("reading a missing group raises ErrorNotFound", errors.ErrorNotFound,
           lambda: groups.read(p + "_no_such_group"))

    # e) permissions by name: list, details, one.
    perm_names = perms.list_all()
    specific = perm(ResourceType.MODEL, MethodType.PUT, model_id)
    check("permission string format is type-method-id with '-' in the id as '___'",
          specific.to_str() == "model-put-%s" % model_id.replace("-", "___"), specific.to_str())
    check("list permissions: the groups' permissions are listed",
          all(x.to_str() in perm_names for x in g1_perms + g2_perms), perm_names)
    pdetails = perms.list_details(limit=10_000)
    check("list permission details: Permission objects",
          len(pdetails) > 0 and all(isinstance(x, dict) for x in pdetails), pdetails[:3])
    pdetails = [Permission(**x) for x in pdetails]
    check("list permission details: same set as the names",
          sorted(x.to_str() for x in pdetails) == sorted(perm_names), (pdetails, perm_names))
    got = perms.read(specific.to_str())
    check("read permission model-put-<id>", isinstance(got, Permission) and perm_key(got) == perm_key(specific), got)
    got = perms.read("user-get")
    check("read permission user-get (no resource id)",
          perm_key(got) == perm_key(perm(ResourceType.USER, MethodType.GET)), got)
    raises("reading a missing permission raises ErrorNotFound", errors.ErrorNotFound,
           lambda: perms.read("model-get-" + p + "___never___granted"))

    # f) users: one admin, one regular.
    pw_a, pw_r = "Admin-pass-" + p + "-1", "Regular-pass-" + p + "-1"
    ua, ur = p + "_admin", p + "_regular"
    new_a = UserWithPassword(username=ua, password=pw_a, email=ua + "@example.org", full_name="MLTE Admin",
                             role=RoleType.ADMIN, groups=[])
    new_r = UserWithPassword(username=ur, password=pw_r, email=ur + "@example.org", full_name="MLTE Regular",
                             role=RoleType.REGULAR, groups=[Group(name=g1)])
    check_user("create admin user (response)", users.create(new_a), new_a, pw_a, {})
    check_user("create regular user in group 1 (response)", users.create(new_r), new_r, pw_r, {g1: g1_perms})
    check_user("read admin user", users.read(ua), new_a, pw_a, {})
    check_user("read regular user", users.read(ur), new_r, pw_r, {g1: g1_perms})
    names = users.list_all()
    check("list users: both new users and the admin listed",
          ua in names and ur in names and args.admin_user in names, names)
    details = {u.username: u for u in users.list_details(limit=10_000)}
    check("list user details: both new users", ua in details and ur in details, list(details))
    check_user("user details: admin user", details[ua], new_a, pw_a, {})
    check_user("user details: regular user", details[ur], new_r, pw_r, {g1: g1_perms})

    # g) errors on users.
    raises("reading a missing user raises ErrorNotFound", errors.ErrorNotFound,
           lambda: users.read(p + "_no_such_user"))
    raises("creating a duplicate user raises ErrorAlreadyExists", errors.ErrorAlreadyExists,
           lambda: users.create(UserWithPassword(username=ur, password="x-" + pw_r)))
    raises("creating the user 'me' is refused (400 -> InternalError)", errors.InternalError,
           lambda: users.create(UserWithPassword(username="me", password="Me-pass-12345")))
    check("'me' was not created", "me" not in users.list_all())
    raises("editing a missing user raises ErrorNotFound", errors.ErrorNotFound,
           lambda: users.edit(BasicUser(username=p + "_no_such_user")))
    raises("deleting a missing user raises ErrorNotFound", errors.ErrorNotFound,
           lambda: users.delete(p + "_no_such_user"))
    raises("deleting a missing group raises ErrorNotFound", errors.ErrorNotFound,
           lambda: groups.delete(p + "_no_such_group"))

    # h) logins: wrong password, the new users' own logins, a regular user's limits.
    e = raises("login with a wrong password raises the client's plain Exception", Exception,
               lambda: login(url, args.admin_user, args.admin_password + "-wrong"), exact=True)
    check("wrong-password message names a 4xx token failure",
          str(e).startswith("Token request was unsuccessful - code: 4"), str(e))
    raises("login of an unknown user raises the plain Exception", Exception,
           lambda: login(url, p + "_no_such_user", "whatever"), exact=True)
    a_client, a_store = login(url, ua, pw_a)
    check("the new admin-role user logs in", bool(a_client.access_token))
    check("the new admin-role user can list users", ur in a_store.session().user_mapper.list_all())
    r_client, r_store = login(url, ur, pw_r)
    check("the regular user logs in", bool(r_client.access_token))
    raises("the regular user cannot create users (403 -> ForbiddenError)", errors.ForbiddenError,
           lambda: r_store.session().user_mapper.create(UserWithPassword(username=p + "_sneaky", password="Sn-12345")))
    check("the refused user was not created", p + "_sneaky" not in users.list_all())

    # i) edit the regular user: email, full name, disabled, role, groups (no password: it is kept).
    edit_r = BasicUser(username=ur, email=ur + "@changed.example.org", full_name="MLTE Changed", disabled=True,
                       role=RoleType.ADMIN, groups=[Group(name=g1), Group(name=g2)])
    check_user("edit regular user (response)", users.edit(edit_r), edit_r, pw_r, {g1: g1_perms, g2: g2_perms})
    check_user("read edited user", users.read(ur), edit_r, pw_r, {g1: g1_perms, g2: g2_perms})
    raises("a disabled user cannot log in", Exception, lambda: login(url, ur, pw_r), exact=True)
    enabled = BasicUser(**{**edit_r.to_json(), "disabled": False, "groups": [Group(name=g2)]})
    check_user("re-enable the user, only in group 2", users.edit(enabled), enabled, pw_r, {g2: g2_perms})
    check_user("read re-enabled user", users.read(ur), enabled, pw_r, {g2: g2_perms})
    check("the re-enabled user logs in with the unchanged password", bool(login(url, ur, pw_r)[0].access_token))
    new_pw = "Changed-pass-" + p + "-2"
    with_pw = UserWithPassword(**{**enabled.to_json(), "password": new_pw})
    check_user("edit with a password (response)", users.edit(with_pw), enabled, new_pw, {g2: g2_perms})
    check("after a password edit the new password logs in", bool(login(url, ur, new_pw)[0].access_token))
    raises("after a password edit the old password is refused", Exception, lambda: login(url, ur, pw_r), exact=True)

    # j) edit a group's permissions; users see the group's current permissions.
    g2_new = [perm(ResourceType.MODEL, MethodType.GET, model_id), perm(ResourceType.CUSTOM_LIST, MethodType.ANY)]
    got = groups.edit(Group(name=g2, permissions=g2_new))
    check("edit group 2 permissions (response)", got.name == g2 and same_perms(got.permissions, g2_new), got)
    got = groups.read(g2)
    check("read edited group 2", same_perms(got.permissions, g2_new), got)
    check_user("the member sees group 2's new permissions", users.read(ur), enabled, new_pw, {g2: g2_new})
    raises("editing a missing group raises ErrorNotFound", errors.ErrorNotFound,
           lambda: groups.edit(Group(name=p + "_no_such_group", permissions=[])))
    got = perms.read(perm(ResourceType.MODEL, MethodType.GET, model_id).to_str())
    check("the edited group's new permission can be read by name",
          perm_key(got) == perm_key(perm(ResourceType.MODEL, MethodType.GET, model_id)), got)

    # k) delete group 1 (no members left), then the regular user.
    got = groups.delete(g1)
    check("delete group 1 returns it", isinstance(got, Group) and got.name == g1
          and same_perms(got.permissions, g1_perms), got)
    raises("deleted group 1 is gone (ErrorNotFound)", errors.ErrorNotFound, lambda: groups.read(g1))
    check("deleted group 1 is not listed", g1 not in groups.list_all())
    check("group 2 is still there", g2 in groups.list_all())
    got = users.delete(ur)
    check_user("delete regular user returns it", got, enabled, new_pw, {g2: g2_new})
    raises("deleted user is gone (ErrorNotFound)", errors.ErrorNotFound, lambda: users.read(ur))
    check("deleted user is not listed", ur not in users.list_all())
    raises("deleted user cannot log in", Exception, lambda: login(url, ur, new_pw), exact=True)
    check("the admin-role user is still there", users.read(ua).username == ua)

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
