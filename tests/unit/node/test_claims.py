"""The executor asks its engine for logprob claims and shows the client only what it asked for."""

from __future__ import annotations

import copy

from dinfer.node.claims import CLAIM_TOP_K, ClientLogprobs, ask_engine, for_client, needs_rewrite, take_claims

CHAT_CHOICE = {
    "index": 0,
    "delta": {"content": "Hi"},
    "logprobs": {"content": [{"token": "Hi", "logprob": -0.5, "bytes": None, "top_logprobs": [
        {"token": "Hi", "logprob": -0.5}, {"token": "Hello", "logprob": -1.0}, {"token": "Hey", "logprob": -2.0}]}]},
}
COMPLETION_CHOICE = {
    "text": " Paris", "index": 0,
    "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.25], "text_offset": [3],
                 "top_logprobs": [{" Paris": -0.25, " the": -2.5, " London": -4.0}]},
}


def test_engine_always_gets_at_least_the_claim_top_k() -> None:
    body = {"messages": []}
    assert ask_engine("chat", body) == ClientLogprobs(False, 0)
    assert body["logprobs"] is True and body["top_logprobs"] == CLAIM_TOP_K
    body = {"messages": [], "logprobs": True, "top_logprobs": 10}
    assert ask_engine("chat", body) == ClientLogprobs(True, 10) and body["top_logprobs"] == 10
    body = {"prompt": "x", "logprobs": 0}
    assert ask_engine("completion", body) == ClientLogprobs(True, 0) and body["logprobs"] == CLAIM_TOP_K
    body = {"prompt": "x"}
    assert ask_engine("completion", body) == ClientLogprobs(False, 0)


def test_claims_of_chat_and_completion_chunks() -> None:
    assert take_claims("chat", CHAT_CHOICE) == [("Hi", -0.5, [("Hi", -0.5), ("Hello", -1.0), ("Hey", -2.0)])]
    assert take_claims("completion", COMPLETION_CHOICE) == [
        (" Paris", -0.25, [(" Paris", -0.25), (" the", -2.5), (" London", -4.0)])]
    assert take_claims("chat", {"delta": {"role": "assistant"}, "logprobs": None}) == []
    assert take_claims("chat", {"logprobs": {"content": [{"token": "x"}, "junk"]}}) == []


def test_client_sees_no_logprobs_unless_asked_and_no_more_alternatives_than_asked() -> None:
    unasked = copy.deepcopy(CHAT_CHOICE)
    for_client("chat", unasked, ClientLogprobs(False, 0))
    assert unasked["logprobs"] is None and unasked["delta"] == {"content": "Hi"}
    two = copy.deepcopy(CHAT_CHOICE)
    for_client("chat", two, ClientLogprobs(True, 2))
    assert [t["token"] for t in two["logprobs"]["content"][0]["top_logprobs"]] == ["Hi", "Hello"]
    one = copy.deepcopy(COMPLETION_CHOICE)
    for_client("completion", one, ClientLogprobs(True, 1))
    assert one["logprobs"]["top_logprobs"] == [{" Paris": -0.25}] and one["logprobs"]["tokens"] == [" Paris"]
    assert needs_rewrite(ClientLogprobs(False, 0)) and needs_rewrite(ClientLogprobs(True, 2))
    assert not needs_rewrite(ClientLogprobs(True, CLAIM_TOP_K))
