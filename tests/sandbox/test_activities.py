from __future__ import annotations

from tests.sandbox.conftest import Api


def _contact_id(api: Api) -> int:
    return int(api.post("/contacts", {"contact": {"email": "act@x.io"}}).json()["contact"]["id"])


def test_sales_activity_lifecycle(api: Api) -> None:
    cid = _contact_id(api)
    types = api.get("/selector/sales_activity_types").json()["sales_activity_types"]
    body = {"sales_activity": {"title": "Call", "sales_activity_type_id": types[1]["id"],
                               "start_date": "2024-05-01T10:00:00Z", "end_date": "2024-05-01T10:30:00Z",
                               "targetable_type": "Contact", "targetable_id": cid, "notes": "hi"}}
    created = api.post("/sales_activities", body)
    assert created.status_code == 200
    activity = created.json()["sales_activity"]
    assert activity["targetables"] == [{"id": cid, "type": "Contact"}]
    assert api.get(f"/sales_activities/{activity['id']}").json()["sales_activity"]["title"] == "Call"
    assert api.put(f"/sales_activities/{activity['id']}", {"sales_activity": {"title": "Call 2"}}).json()[
        "sales_activity"]["title"] == "Call 2"
    listing = api.get("/sales_activities").json()
    assert listing["meta"]["total"] == 1
    assert api.get(f"/contacts/{cid}/activities").json()["activities"][0]["action_type"] == "sales_activity"
    assert api.delete(f"/sales_activities/{activity['id']}").json() == {"success": "200"}


def test_sales_activity_validation(api: Api) -> None:
    response = api.post("/sales_activities", {"sales_activity": {"title": "x"}})
    assert response.status_code == 400
    assert "Start date can't be blank" in response.json()["errors"]["message"]
    cid = _contact_id(api)
    bad_type = api.post("/sales_activities", {"sales_activity": {
        "title": "x", "sales_activity_type_id": 1, "start_date": "2024-01-01", "end_date": "2024-01-01",
        "targetable_type": "Contact", "targetable_id": cid}})
    assert bad_type.json()["errors"]["message"] == ["Invalid sales activity type provided."]


def test_notes(api: Api) -> None:
    cid = _contact_id(api)
    note = api.post("/notes", {"note": {"description": "n", "targetable_type": "Contact", "targetable_id": cid}})
    assert note.status_code == 200
    nid = note.json()["note"]["id"]
    assert api.put(f"/notes/{nid}", {"note": {"description": "m"}}).json()["note"]["description"] == "m"
    assert api.get(f"/notes/{nid}").json()["note"]["targetables"] == [{"id": cid, "type": "Contact"}]
    assert api.delete(f"/notes/{nid}").json() == {"success": "200"}
    missing = api.post("/notes", {"note": {"description": "n", "targetable_type": "Contact", "targetable_id": 1}})
    assert missing.json()["errors"]["message"] == ["Contact 1 does not exist"]
    blank = api.post("/notes", {"note": {"targetable_type": "Contact", "targetable_id": cid}})
    assert blank.json()["errors"]["message"] == ["Description can't be blank"]
