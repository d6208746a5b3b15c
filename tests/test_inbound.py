"""A connection's inbound state (roomer/inbound.py) with no socket and no clock: every
decision is a function of what it was told, the time included."""

from __future__ import annotations

import pytest

from roomer.inbound import (
    BACKLOG_HARD,
    BACKLOG_PAUSE,
    BACKLOG_PAUSE_BYTES,
    CLOSING,
    CONNECTING,
    GONE,
    OPEN,
    Admission,
    Inbound,
    Liveness,
)

RATE = (10.0, 1.0)


def opened(rate: tuple[float, float] | None = RATE, now: float = 0.0,
           byte_rate: tuple[float, float] | None = None) -> Inbound:
    inbound = Inbound(rate, now, byte_rate)
    inbound.accept()
    return inbound


# admission -------------------------------------------------------------------------------


def test_a_full_bucket_takes_its_count_then_refuses_once_per_window() -> None:
    inbound = opened()
    verdicts = [inbound.admit(0.0, RATE) for _ in range(12)]
    assert verdicts[:10] == [Admission.TAKE] * 10
    assert verdicts[10:] == [Admission.REFUSE, Admission.DROP]


def test_the_bucket_refills_at_its_rate_and_no_further() -> None:
    inbound = opened()
    for _ in range(10):
        inbound.admit(0.0, RATE)
    assert inbound.admit(0.05, RATE) is Admission.REFUSE  # half a token back
    assert inbound.admit(0.2, RATE) is Admission.TAKE  # 1.5 tokens back, one taken
    # An hour idle refills the bucket to its count, not to 36,000.
    taken = [inbound.admit(3600.0, RATE) for _ in range(11)]
    assert taken.count(Admission.TAKE) == 10


def test_dropping_as_many_again_in_a_window_is_abuse() -> None:
    inbound = opened()
    verdicts = [inbound.admit(0.0, RATE) for _ in range(20)]
    assert verdicts[10] is Admission.REFUSE
    assert verdicts[11:19] == [Admission.DROP] * 8
    assert verdicts[19] is Admission.ABUSE


def test_a_new_window_refuses_with_an_error_again() -> None:
    inbound = opened()
    for _ in range(11):
        inbound.admit(0.0, RATE)
    for _ in range(10):  # a second later: ten tokens back, taken
        assert inbound.admit(1.0, RATE) is Admission.TAKE
    assert inbound.admit(1.0, RATE) is Admission.REFUSE


def test_a_server_stall_is_not_charged_to_the_client() -> None:
    # The client sent 3 frames a second (30% of its limit) while the server was stopped
    # for 10 s: the 30 frames that waited in the kernel are read in one burst.
    inbound = opened()
    burst = [inbound.admit(10.0, RATE, stall=10.0) for _ in range(30)]
    assert burst == [Admission.TAKE] * 30
    # Without the allowance the same burst passes its limit.
    charged = opened()
    assert [charged.admit(10.0, RATE) for _ in range(30)].count(Admission.TAKE) == 10


def test_the_stall_allowance_is_what_the_client_could_send_meanwhile() -> None:
    inbound = opened()
    taken = [inbound.admit(2.0, RATE, stall=2.0) for _ in range(40)]
    assert taken.count(Admission.TAKE) == 30  # its count, plus 2 s at 10/s
    # Once the allowance is over the bucket is held to its count again.
    assert inbound.admit(4.0, RATE).name == "TAKE"
    assert [inbound.admit(4.0, RATE) for _ in range(20)].count(Admission.TAKE) == 9


def test_no_rate_limit_takes_everything() -> None:
    inbound = opened(None)
    assert all(inbound.admit(0.0, None) is Admission.TAKE for _ in range(10_000))


def test_an_answer_to_the_servers_ask_is_refunded_up_to_the_count() -> None:
    inbound = opened()
    for _ in range(10):
        inbound.admit(0.0, RATE)
    inbound.refund(RATE)
    assert inbound.admit(0.0, RATE) is Admission.TAKE
    assert inbound.admit(0.0, RATE) is Admission.REFUSE
    full = opened()
    for _ in range(5):
        full.refund(RATE)  # never above the count
    assert [full.admit(0.0, RATE) for _ in range(11)].count(Admission.TAKE) == 10


def test_the_error_window() -> None:
    inbound = opened()
    limit = (3.0, 10.0)
    assert [inbound.count_error(0.0, limit) for _ in range(4)] == [False] * 3 + [True]
    assert inbound.count_error(10.0, limit) is False  # a new window
    assert inbound.count_error(0.0, None) is False


# assembly ----------------------------------------------------------------------------------


def test_a_whole_message_in_one_frame() -> None:
    inbound = opened()
    assert inbound.start(True, b"abc") == b"abc"
    assert inbound.start(True, memoryview(b"xyz")) == b"xyz"


def test_a_fragmented_message_is_assembled() -> None:
    inbound = opened()
    assert inbound.start(False, memoryview(b"ab")) is None
    assert inbound.more(False, memoryview(b"cd"), 100) is None
    assert inbound.more(True, memoryview(b"ef"), 100) == b"abcdef"
    assert inbound.start(True, b"next") == b"next"


def test_fragmentation_errors_are_reasons_to_close() -> None:
    inbound = opened()
    assert inbound.more(True, b"x", 100) == "continuation without a message"
    assert inbound.start(False, b"ab") is None
    assert inbound.start(True, b"cd") == "new message inside a fragmented one"


def test_a_fragmented_message_past_the_limit_is_too_big() -> None:
    inbound = opened()
    assert inbound.start(False, b"a" * 60) is None
    assert inbound.more(False, b"b" * 60, 100) == ""
    # Its pieces are gone: what follows is a protocol error, not more of it.
    assert inbound.more(True, b"c", 100) == "continuation without a message"


def test_a_dropped_piece_drops_the_whole_message() -> None:
    inbound = opened()
    assert inbound.start(False, b"ab") is None
    inbound.dropped(False)  # the second piece was refused by the rate limit
    assert inbound.more(False, b"cd", 100) is None
    assert inbound.more(True, b"ef", 100) is None  # the last piece: skipped
    assert inbound.start(True, b"next") == b"next"


# order -------------------------------------------------------------------------------------


def test_messages_wait_in_order_while_busy_and_come_back_in_order() -> None:
    inbound = opened()
    assert not inbound.waiting()
    inbound.busy = True
    inbound.handled()  # the message that made it busy was handled: the rest waits
    assert inbound.waiting()
    for i in range(3):
        inbound.queue(b"%d" % i)
        assert inbound.pace(0.0, asking=False) == 0
    assert inbound.next() is None  # still busy
    inbound.busy = False
    assert [inbound.next(), inbound.next(), inbound.next(), inbound.next()] == [
        b"0", b"1", b"2", None]
    assert inbound.settle() is False  # nothing paused reading
    assert not inbound.waiting()


def busy_with(count: int, size: int = 1) -> tuple[Inbound, list[int]]:
    inbound = opened()
    inbound.busy = True
    inbound.handled()
    steps = []
    for _ in range(count):
        inbound.queue(b"m" * size)
        steps.append(inbound.pace(0.0, asking=False))
    return inbound, steps


def test_a_full_backlog_pauses_reading_once_and_settling_releases_it() -> None:
    inbound, steps = busy_with(BACKLOG_PAUSE + 10)
    assert steps.count(1) == 1 and steps[BACKLOG_PAUSE - 1] == 1 and -1 not in steps
    inbound.busy = False
    while inbound.next() is not None:
        pass
    assert inbound.settle() is True
    assert inbound.backlog == 0


def test_a_backlog_of_big_messages_pauses_by_bytes() -> None:
    _, steps = busy_with(3, size=BACKLOG_PAUSE_BYTES // 2)
    assert steps == [0, 1, 0]


def test_a_client_being_asked_is_read_on_up_to_the_hard_bound() -> None:
    inbound, steps = busy_with(BACKLOG_PAUSE)
    assert steps[-1] == 1
    assert inbound.pace(0.0, asking=True) == -1  # the server asks: its answer must come
    for _ in range(BACKLOG_HARD - BACKLOG_PAUSE - 1):
        inbound.queue(b"m")
        assert inbound.pace(0.0, asking=True) == 0
    assert not inbound.overfull
    inbound.queue(b"m")
    assert inbound.overfull
    assert inbound.pace(0.0, asking=True) == 1  # the hard bound holds whatever the reason
    assert inbound.pace(0.0, asking=False) == 0


def test_a_long_pause_is_lifted_so_a_dead_peer_can_be_noticed() -> None:
    inbound, _ = busy_with(BACKLOG_PAUSE)
    assert inbound.lift(10.0, after=40.0) == 0  # held 10 s: not yet
    assert inbound.lift(40.0, after=40.0) == -1
    inbound.queue(b"m")
    assert inbound.pace(41.0, asking=False) == 0  # lifted: read on
    inbound.busy = False
    while inbound.next() is not None:
        pass
    inbound.settle()
    inbound.busy = True
    inbound.handled()
    steps = []
    for _ in range(BACKLOG_PAUSE):
        inbound.queue(b"m")
        steps.append(inbound.pace(50.0, asking=False))
    assert steps[-1] == 1  # a fresh backlog pauses again


def test_a_held_connection_keeps_its_backlog_until_released() -> None:
    inbound = opened()
    inbound.held = True
    inbound.handled()
    inbound.queue(b"a")
    assert inbound.next() is None and inbound.settle() is False
    inbound.held = False
    assert inbound.next() == b"a"


def test_messages_wait_for_on_connect_and_are_dropped_on_close() -> None:
    inbound = Inbound(RATE, 0.0)
    assert inbound.state == CONNECTING and not inbound.accepting()
    inbound.defer()
    assert inbound.accepting()
    inbound.queue(b"early")
    assert inbound.next() is None  # not open yet
    inbound.accept()
    assert inbound.state == OPEN and inbound.next() == b"early"
    inbound.queue(b"late")
    inbound.close()
    assert inbound.state == CLOSING and not inbound.accepting()
    assert inbound.backlog == 0
    inbound.gone()
    assert inbound.state == GONE


# the turn budget and read holds ---------------------------------------------------------------


def test_work_is_counted_per_turn() -> None:
    inbound = opened()
    assert [inbound.work(1) for _ in range(3)] == [1, 2, 3]
    assert inbound.work(2) == 1


def test_read_holds_nest() -> None:
    inbound = opened()
    assert inbound.hold_reading() is True
    assert inbound.hold_reading() is False
    assert inbound.release_reading() is False
    assert not inbound.reading
    assert inbound.release_reading() is True
    assert inbound.reading


# liveness ------------------------------------------------------------------------------------


def test_a_quiet_connection_is_pinged_then_cut() -> None:
    inbound = opened()
    assert inbound.liveness(0.0, 20.0, 20.0) is Liveness.HEARD  # heard at connect
    assert inbound.liveness(10.0, 20.0, 20.0) is Liveness.QUIET
    assert inbound.liveness(20.0, 20.0, 20.0) is Liveness.PING
    assert inbound.liveness(30.0, 20.0, 20.0) is Liveness.QUIET
    assert inbound.liveness(40.0, 20.0, 20.0) is Liveness.DEAD


def test_a_frame_or_a_read_hold_is_not_silence() -> None:
    inbound = opened()
    inbound.liveness(0.0, 20.0, 20.0)
    assert inbound.liveness(20.0, 20.0, 20.0) is Liveness.PING
    inbound.heard()  # its pong
    assert inbound.liveness(30.0, 20.0, 20.0) is Liveness.HEARD
    inbound.hold_reading()
    assert inbound.liveness(100.0, 20.0, 20.0) is Liveness.HEARD


@pytest.mark.parametrize("count", [1, 200])
def test_admission_never_goes_negative(count: int) -> None:
    rate = (float(count), 1.0)
    inbound = opened(rate)
    verdicts = [inbound.admit(0.0, rate) for _ in range(count * 3)]
    assert verdicts.count(Admission.TAKE) == count


# the byte limit ------------------------------------------------------------------------------

BYTES = (1000.0, 1.0)


def test_the_byte_limit_counts_payload_sizes() -> None:
    inbound = opened(None, byte_rate=BYTES)
    taken = [inbound.admit(0.0, None, size=300, byte_rate=BYTES) for _ in range(4)]
    assert taken == [Admission.TAKE] * 3 + [Admission.REFUSE]
    # Small frames still pass where the bytes allow them; a second later all is back.
    assert inbound.admit(0.0, None, size=100, byte_rate=BYTES) is Admission.TAKE
    assert inbound.admit(1.0, None, size=1000, byte_rate=BYTES) is Admission.TAKE


def test_a_frame_larger_than_the_bucket_passes_when_it_is_full_and_leaves_a_debt() -> None:
    inbound = opened(None, byte_rate=BYTES)
    assert inbound.admit(0.0, None, size=5000, byte_rate=BYTES) is Admission.TAKE
    assert inbound.admit(2.0, None, size=1, byte_rate=BYTES) is Admission.REFUSE  # in debt
    assert inbound.admit(5.0, None, size=1, byte_rate=BYTES) is Admission.TAKE  # paid off


def test_the_byte_limit_alone_never_closes() -> None:
    inbound = opened(None, byte_rate=BYTES)
    verdicts = {inbound.admit(0.0, None, size=2000, byte_rate=BYTES) for _ in range(10_000)}
    assert Admission.ABUSE not in verdicts


def test_both_limits_apply_and_a_refusal_takes_nothing() -> None:
    inbound = opened((3.0, 1.0), byte_rate=BYTES)
    assert inbound.admit(0.0, (3.0, 1.0), size=900, byte_rate=BYTES) is Admission.TAKE
    assert inbound.admit(0.0, (3.0, 1.0), size=900, byte_rate=BYTES) is Admission.REFUSE
    # The refused frame drew no frame token: two small ones still fit.
    assert inbound.admit(0.0, (3.0, 1.0), size=10, byte_rate=BYTES) is Admission.TAKE
    assert inbound.admit(0.0, (3.0, 1.0), size=10, byte_rate=BYTES) is Admission.TAKE
    assert inbound.admit(0.0, (3.0, 1.0), size=10, byte_rate=BYTES) is Admission.DROP
