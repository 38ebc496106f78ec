"""Drives registrar's data-tracker API the way the data tracker's own test
suite and frontend do: `requests.Session`s holding a browser session
cookie (and the `X-CSRF-Token` header when a `_csrf_token` cookie exists),
one per role, every route tried by every role, the state read back.

Roles (as in the data tracker's tests): no-login, base (no permission),
edit (DATA_EDIT), owners (OWNERS_READ), users (USER_MANAGEMENT), data
(DATA_MANAGEMENT), root (an administrator), plus adder (USER_ADD) and
searcher (USER_SEARCH). Prints `N passed, M failed` last; exit 1 on failure.
"""
import argparse
import sys
import uuid

import requests

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--admin-user", required=True)
ap.add_argument("--admin-password", required=True)
ap.add_argument("--password", required=True, help="the password of every role user")
args = ap.parse_args()
BASE = args.url.rstrip("/")
PASSED, FAILED = 0, 0


def check(what, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
        print(f"FAIL {what}: {detail}")


def request(session, path, method="GET", data=None, headers=None):
    r = session.request(method, f"{BASE}{path}", json=data, headers=headers, allow_redirects=False)
    try:
        body = r.json()
    except ValueError:
        body = None
    return r.status_code, body


def as_user(session, name):
    """Logs `session` in as `name` (a fresh login, like the tracker's
    developer login), or out for None; sets the CSRF header as its
    frontend does."""
    session.cookies.clear()
    if name:
        password = args.admin_password if name == args.admin_user else args.password
        r = session.post(f"{BASE}/api/v1/auth/login", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
    else:
        session.get(f"{BASE}/api/v1/logout")
    token = session.cookies.get("_csrf_token")
    if token:
        session.headers["X-CSRF-Token"] = token


ROLES = {
    "no-login": (None, None),
    "base": ("dt_base", []),
    "edit": ("dt_edit", ["DATA_EDIT"]),
    "owners": ("dt_owners", ["OWNERS_READ"]),
    "users": ("dt_users", ["USER_MANAGEMENT"]),
    "data": ("dt_data", ["DATA_MANAGEMENT"]),
    "root": (args.admin_user, None),
    "adder": ("dt_adder", ["USER_ADD"]),
    "searcher": ("dt_searcher", ["USER_SEARCH"]),
}
SEARCHERS = ("users", "root", "edit", "searcher")
ADDERS = ("users", "root", "edit", "adder")
MANAGERS = ("users", "root")

admin = requests.Session()
as_user(admin, args.admin_user)

# Public routes.
code, body = request(requests.Session(), "/api/v1/user/permissions")
check("permission types", code == 200 and body == {"permissions": [
    "DATA_EDIT", "OWNERS_READ", "USER_ADD", "USER_SEARCH", "USER_MANAGEMENT", "DATA_MANAGEMENT"]}, body)
code, body = request(requests.Session(), "/api/v1/login")
check("login types", code == 200 and "apikey" in body["types"], body)
code, body = request(requests.Session(), "/api/v1/user/me")
check("me while logged out", code == 200 and body["user"]["email"] == "" and body["user"]["permissions"] == [], body)

# The role users: created through the native API with a password (the
# tracker's developer login stands for a fresh login), their permission
# types set through the tracker's PATCH, read back through its GET.
IDS = {}
for role, (name, perms) in ROLES.items():
    if name is None:
        continue
    if perms is not None:
        r = admin.post(f"{BASE}/api/v1/users", json={"username": name, "email": f"{name}@testers.example.org",
                                                     "password": args.password, "first_name": role.capitalize()})
        check(f"create {name}", r.status_code == 201, r.text)
        IDS[role] = r.json()["id"]
        code, _ = request(admin, f"/api/v1/user/{IDS[role]}", "PATCH", {"user": {"permissions": perms}})
        check(f"set {role} permissions", code == 200, code)
        code, body = request(admin, f"/api/v1/user/{IDS[role]}")
        check(f"{role} permissions read back", code == 200 and body["user"]["permissions"] == perms, body)
    else:
        code, body = request(admin, "/api/v1/user/me")
        IDS[role] = body["user"]["_id"]
TOTAL = len(admin.get(f"{BASE}/api/v1/users?limit=500").json()["items"])


def all_roles(path, method="GET", data=None):
    session = requests.Session()
    for role, (name, _) in ROLES.items():
        as_user(session, name)
        code, body = request(session, path, method, data)
        yield role, code, body


# list users (USER_SEARCH)
for role, code, body in all_roles("/api/v1/user"):
    if role in SEARCHERS:
        check(f"list as {role}", code == 200 and len(body["users"]) == TOTAL, (code, body))
        full = role in MANAGERS
        check(f"list fields as {role}", all(("auth_ids" in u) == full and ("permissions" in u) == full
                                             for u in body["users"]), body["users"][0])
    else:
        check(f"list as {role}", code == (401 if role == "no-login" else 403), code)

# the current user
for role, code, body in all_roles("/api/v1/user/me"):
    check(f"me as {role}", code == 200 and set(body["user"]) == {
        "_id", "id", "affiliation", "auth_ids", "email", "contact", "name", "orcid", "permissions", "url"}, body)
    if role not in ("no-login", "root"):
        check(f"me name as {role}", body["user"]["name"] == role.capitalize(), body)
        check(f"me permissions as {role}", body["user"]["permissions"] == ROLES[role][1], body)

# update the current user: empty, then real fields, then fields not allowed
for role, code, body in all_roles("/api/v1/user/me", "PATCH", {"user": {}}):
    check(f"empty self-update as {role}", code == (401 if role == "no-login" else 400), code)
session = requests.Session()
for role, (name, _) in ROLES.items():
    as_user(session, name)
    new = {"affiliation": f"University of {role}", "name": f"Updated {role}", "orcid": "0000-0002-1825-0097"}
    code, _ = request(session, "/api/v1/user/me", "PATCH", {"user": new})
    if name is None:
        check("self-update logged out", code == 401, code)
        continue
    check(f"self-update as {role}", code == 200, code)
    _, body = request(session, "/api/v1/user/me")
    check(f"self-update read back as {role}", all(body["user"][k] == v for k, v in new.items()), body)
    # Restore the name the other checks expect.
    request(session, "/api/v1/user/me", "PATCH", {"user": {"name": role.capitalize()}})
for bad in ({"_id": str(uuid.uuid4())}, {"api_key": uuid.uuid4().hex}, {"auth_ids": [uuid.uuid4().hex]},
            {"email": "email@example.com"}, {"permissions": ["USER_MANAGEMENT", "DATA_MANAGEMENT"]}):
    for role, code, body in all_roles("/api/v1/user/me", "PATCH", {"user": bad}):
        check(f"self-update {list(bad)} as {role}", code == (401 if role == "no-login" else 403), code)
_, body = request(admin, f"/api/v1/user/{IDS['users']}")
check("refused self-updates changed nothing", body["user"]["permissions"] == ["USER_MANAGEMENT"]
      and body["user"]["email"] == "dt_users@testers.example.org", body)

# update another user (USER_MANAGEMENT)
base = IDS["base"]
for role, code, body in all_roles(f"/api/v1/user/{base}", "PATCH", {}):
    check(f"update without user as {role}", code == {"no-login": 401}.get(role, 400 if role in MANAGERS else 403), code)
session = requests.Session()
for role, (name, _) in ROLES.items():
    as_user(session, name)
    new = {"affiliation": f"Updated by {role}", "name": "Updated name"}
    code, _ = request(session, f"/api/v1/user/{base}", "PATCH", {"user": new})
    if role in MANAGERS:
        check(f"update base as {role}", code == 200, code)
        _, body = request(admin, f"/api/v1/user/{base}")
        check(f"update read back ({role})", body["user"]["affiliation"] == new["affiliation"], body)
        request(admin, f"/api/v1/user/{base}", "PATCH", {"user": {"name": "Base"}})
    else:
        check(f"update base as {role}", code == (401 if role == "no-login" else 403), code)
        _, body = request(admin, f"/api/v1/user/{base}")
        check(f"refused update left base ({role})", body["user"]["affiliation"] != new["affiliation"], body)
for bad, managers in (({"_id": str(uuid.uuid4())}, 403), ({"api_key": uuid.uuid4().hex}, 403),
                      ({"email": "bad@email"}, 400), ({"unknown": 1}, 400), ({"name": 7}, 400),
                      ({"orcid": "0000-0002-1825-0098"}, 400), ({"permissions": ["ROOT"]}, 400)):
    for role, code, body in all_roles(f"/api/v1/user/{base}", "PATCH", {"user": bad}):
        want = 401 if role == "no-login" else (managers if role in MANAGERS else 403)
        check(f"update base {bad} as {role}", code == want, (code, body))
for target in (str(uuid.uuid4()), "not-a-uuid", "dt_base"):
    for role, code, body in all_roles(f"/api/v1/user/{target}", "PATCH", {"user": {"name": "x"}}):
        want = 401 if role == "no-login" else (404 if role in MANAGERS else 403)
        check(f"update {target} as {role}", code == want, code)

# nobody changes their own permission types; a user manager cannot make an administrator's
session = requests.Session()
as_user(session, "dt_users")
code, _ = request(session, f"/api/v1/user/{IDS['users']}", "PATCH", {"user": {"permissions": ["DATA_MANAGEMENT"]}})
check("own permissions through the manager route", code == 403, code)
code, _ = request(session, f"/api/v1/user/{IDS['root']}", "PATCH", {"user": {"affiliation": "Taken"}})
check("manager edits an administrator", code == 403, code)

# add users (USER_ADD); permissions need USER_MANAGEMENT
ADDED = []
session = requests.Session()
for role, (name, _) in ROLES.items():
    as_user(session, name)
    email = f"new_{role}@added.example.com"
    code, body = request(session, "/api/v1/user", "POST", {"user": {"email": email, "name": "Added User"}})
    if role in ADDERS:
        check(f"add as {role}", code == 200 and body["_id"] == body["id"], (code, body))
        ADDED.append(body["_id"])
        _, got = request(admin, f"/api/v1/user/{body['_id']}")
        check(f"added user read back ({role})", got["user"]["email"] == email and got["user"]["name"] == "Added User", got)
    else:
        check(f"add as {role}", code == (401 if role == "no-login" else 403), code)
full = {"user": {"affiliation": "Added University", "name": "Added name", "email": "user2@added.example.com",
                 "permissions": ["DATA_EDIT"]}}
as_user(session, "dt_edit")
code, _ = request(session, "/api/v1/user", "POST", full)
check("add with permissions as edit", code == 403, code)
code, body = request(admin, "/api/v1/user", "POST", full)
check("add with permissions as root", code == 200, (code, body))
ADDED.append(body["id"])
_, got = request(admin, f"/api/v1/user/{body['id']}")
check("added user's fields", all(got["user"][k] == v for k, v in full["user"].items()), got)
code, _ = request(admin, "/api/v1/user", "POST", full)
check("the same email twice", code == 409, code)
code, _ = request(admin, "/api/v1/user", "POST", {"user": {"name": "No email"}})
check("add without email", code == 400, code)

# delete users (USER_MANAGEMENT)
i = 0
session = requests.Session()
while i < len(ADDED):
    for role, (name, _) in ROLES.items():
        if i >= len(ADDED):
            break
        as_user(session, name)
        code, _ = request(session, f"/api/v1/user/{ADDED[i]}", "DELETE")
        if role in MANAGERS:
            check(f"delete as {role}", code == 200, code)
            gone, _ = request(admin, f"/api/v1/user/{ADDED[i]}")
            check(f"deleted user gone ({role})", gone == 404, gone)
            i += 1
        else:
            check(f"delete as {role}", code == (401 if role == "no-login" else 403), code)
code, _ = request(admin, f"/api/v1/user/{IDS['root']}", "DELETE")
check("delete oneself", code == 403, code)

# API keys: one's own through a fresh login, another's as a manager; each
# key logs in (`/api/v1/login/apikey`) and works in the X-API headers.
KEYS = {}
session = requests.Session()
for role, (name, _) in ROLES.items():
    as_user(session, name)
    if name:
        code, body = request(session, f"/api/v1/user/{IDS[role]}/apikey", "POST")
        check(f"own key as {role}", code == 200 and body["key"], (code, body))
        KEYS[role] = body["key"]
        keyed = requests.Session()
        r = keyed.post(f"{BASE}/api/v1/login/apikey", json={"api-user": f"{name}" if role == "root" else
                                                              f"{name}@testers.example.org", "api-key": body["key"]})
        check(f"key login as {role}", r.status_code == 200 and r.text == "", (r.status_code, r.text))
        _, me = request(keyed, "/api/v1/user/me")
        check(f"key session is {role}", me["user"]["_id"] == IDS[role], me)
        code, me = request(requests.Session(), f"/api/v1/user/{IDS[role]}/actions",
                           headers={"X-API-User": IDS[role], "X-API-Key": body["key"]})
        check(f"X-API headers as {role}", code == 200 and "logs" in me, (code, me))
    code, body = request(session, f"/api/v1/user/{IDS['base']}/apikey", "POST")
    if role in MANAGERS:
        check(f"base's key as {role}", code == 200 and body["key"], code)
        r = requests.post(f"{BASE}/api/v1/login/apikey", json={"api-user": "dt_base", "api-key": body["key"]})
        check(f"base's key logs in ({role})", r.status_code == 200, r.status_code)
    elif role != "base":
        check(f"base's key as {role}", code == (401 if role == "no-login" else 403), code)
# The previous key of base was replaced: the first one no longer works.
code, _ = request(requests.Session(), f"/api/v1/user/{IDS['base']}/log",
                  headers={"X-API-User": "dt_base", "X-API-Key": KEYS["base"]})
check("a replaced key is dead", code == 401, code)
for headers, want in (({"X-API-Key": KEYS["edit"]}, 400),
                      ({"X-API-User": "dt_users", "X-API-Key": KEYS["edit"]}, 401),
                      ({"X-API-User": "dt_edit", "X-API-Key": KEYS["edit"] + "x"}, 401)):
    code, _ = request(requests.Session(), f"/api/v1/user/{IDS['edit']}/log", headers=headers)
    check(f"bad X-API headers {sorted(headers)}", code == want, code)
r = requests.post(f"{BASE}/api/v1/login/apikey", json={"api-user": "dt_edit", "api-key": "rk_nothing_here"})
check("key login with a wrong key", r.status_code == 401, r.status_code)
r = requests.post(f"{BASE}/api/v1/login/apikey", json={"api-key": KEYS["edit"]})
check("key login without api-user", r.status_code == 400, r.status_code)
# A session a key started cannot mint a new key without a password.
keyed = requests.Session()
keyed.post(f"{BASE}/api/v1/login/apikey", json={"api-user": "dt_edit", "api-key": KEYS["edit"]})
code, body = request(keyed, f"/api/v1/user/{IDS['edit']}/apikey", "POST")
check("a key session is not a fresh login", code == 403, (code, body))
# Logging out ends the session.
request(keyed, "/api/v1/logout")
code, _ = request(keyed, "/api/v1/user", "GET")
check("logged out", code == 401, code)

# change logs: about a user (the user and USER_MANAGEMENT) and by a user
for what in ("log", "actions"):
    for role, code, body in all_roles(f"/api/v1/user/{base}/{what}"):
        if role in ("base",) + MANAGERS:
            check(f"{what} of base as {role}", code == 200 and "logs" in body, code)
        else:
            check(f"{what} of base as {role}", code == (401 if role == "no-login" else 403), code)
_, body = request(admin, f"/api/v1/user/{base}/log")
check("log shape", body["entry_id"] == base and body["data_type"] == "user", body)
kinds = [entry["action"] for entry in body["logs"]]
check("log content", kinds[0] == "add" and "edit" in kinds, kinds)
check("log order", [e["timestamp"] for e in body["logs"]] == sorted(e["timestamp"] for e in body["logs"]), kinds)
_, body = request(admin, f"/api/v1/user/{IDS['users']}/actions")
check("actions content", any(e["entry_id"] == base and e["action"] == "edit" for e in body["logs"]), body)

print(f"{PASSED} passed, {FAILED} failed")
sys.exit(1 if FAILED else 0)
