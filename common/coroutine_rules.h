// The rules every coroutine in kvferry keeps (C++20 coroutines on Boost.Asio's awaitable).
// GCC 12, Debian 12's compiler, miscompiles some coroutine code; rules 1–3 avoid what it gets
// wrong, rule 4 is C++ itself. Code shaped by one of them says so in one line that points here.
//
// 1. Never `co_await` inside a condition: not in `if (co_await f())`, `a && co_await f()` or
//    `c ? co_await f() : x`. Await into a named local first, then test the local.
//      const bool sent = co_await writer.writeChunk(data);
//      if (!sent) co_return;
//
// 2. Never build a closure inside a `co_await` expression: no lambda temporary with captures
//    (init-captures included) and no std::function temporary as an argument of the awaited
//    call. GCC 12 destroys such a temporary's captures twice. Name it first:
//      const std::function<void()> on_first = [&] { ... };
//      co_await streamTokens(node, on_first);
//    The same holds for a braced temporary with members to destroy, even one consumed by an
//    inner call (`co_await w.send(encode(Error{"msg", code}))`, `f({name, 1})`): it crashed with
//    "munmap_chunk(): invalid pointer". Build the value into a local first.
//
// 3. No default arguments that build a temporary bound to a reference parameter of a
//    coroutine (`const Headers& headers = {}`): GCC 12 destroys that temporary before the
//    coroutine body reads it. Take such a parameter by value.
//
// 4. A coroutine's frame keeps references as references: a reference parameter must outlive
//    the coroutine, and a lambda that is itself a coroutine refers to its closure, which must
//    outlive the frame. Where a callback returns a coroutine, make the lambda a plain function
//    that calls a member or free coroutine (the frame then copies what it needs).
//
// Including this header also silences GCC 12's -Wmismatched-new-delete for the including file:
// it flags Asio's coroutine frames (aligned_alloc'd, freed with free() by
// awaitable_frame_base::operator delete) when it inlines the frame allocation, a false positive
// (GCC PR 109224, fixed in GCC 13).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
