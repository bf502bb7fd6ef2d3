// The Kotlin SDK end to end: the generated bindings (suspend functions, the EventListener
// callback, ZajelException) against the real zajel-server binary on a loopback port.
// Run by scripts/test.sh; exits non-zero when any check fails or an event does not arrive.
// Usage: java -Djna.library.path=<dir of libzajel_uniffi.so> -cp … ZajelTestKt <zajel-server> <data dir>

import dev.zajel.*
import java.io.File
import java.util.Collections
import kotlinx.coroutines.*

const val PASSWORD = "password-123"

class Recorder : EventListener {
    val events: MutableList<ZajelEvent> = Collections.synchronizedList(mutableListOf())
    val threads: MutableSet<String> = Collections.synchronizedSet(mutableSetOf())

    override fun onEvent(event: ZajelEvent) {
        threads.add(Thread.currentThread().name)
        events.add(event)
    }

    fun snapshot(): List<ZajelEvent> = synchronized(events) { events.toList() }

    fun messages(): List<Message> = snapshot().mapNotNull { (it as? ZajelEvent.Message)?.message }

    /** The first event `pick` maps to non-null, waiting up to 15 s. */
    suspend fun <T> waitFor(what: String, pick: (ZajelEvent) -> T?): T {
        val deadline = System.nanoTime() + 15_000_000_000L
        while (true) {
            for (e in snapshot()) pick(e)?.let { return it }
            check(System.nanoTime() < deadline) { "no $what event within 15 s; got ${snapshot()}" }
            delay(20)
        }
    }
}

class Server(private val binary: String, private val dataDir: String) {
    private var process: Process? = null
    lateinit var url: String

    fun start(listen: String = "127.0.0.1:0") {
        val p = ProcessBuilder(
            binary, "--listen", listen, "--data-dir", dataDir,
            "--argon2-memory-kib", "1024", "--argon2-iterations", "1",
        ).redirectErrorStream(true).also { it.environment()["RUST_LOG"] = "warn" }.start()
        process = p
        val out = p.inputStream.bufferedReader()
        while (true) {
            val line = out.readLine() ?: error("zajel-server exited before listening")
            val m = Regex("listening on (http://[0-9.:]+)").find(line)
            if (m != null) { url = m.groupValues[1]; break }
        }
        // Keep draining its output so the pipe never fills up.
        Thread { out.lineSequence().forEach { } }.apply { isDaemon = true }.start()
    }

    fun stop() {
        process?.let { it.destroy(); it.waitFor() }
    }
}

inline fun <reified E : Throwable> assertThrows(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("$what: expected ${E::class.simpleName}, got $e", e)
    }
    throw AssertionError("$what: expected ${E::class.simpleName}, nothing was thrown")
}

fun main(args: Array<String>) = runBlocking {
    val server = Server(args[0], args[1])
    server.start()
    try {
        flow(server)
    } finally {
        server.stop()
    }
    println("kotlin: all checks passed")
}

suspend fun flow(server: Server) {
    val tag = System.nanoTime().toString(36).takeLast(6)
    val a = register(server.url, "kada$tag", PASSWORD)
    val b = register(server.url, "kbo$tag", PASSWORD)
    val fast = ConnectOptions(reconnectInitialMs = 100uL, reconnectMaxMs = 500uL)
    val ra = Recorder()
    val rb = Recorder()
    val ada = connect(server.url, a.token, ra, fast)
    val bo = connect(server.url, b.token, rb, fast)
    check(ada.state() == ConnectionState.Online)
    check(ada.user()?.id == a.user.id)

    // Friends through requests and events.
    check(ada.requestFriend(b.user.username).relation == Relation.REQUEST_SENT)
    val request = rb.waitFor("friend request") {
        (it as? ZajelEvent.Friend)?.takeIf { f -> f.relation == Relation.REQUEST_RECEIVED }
    }
    check(request.user.id == a.user.id && request.reason == FriendReason.REQUESTED)
    check(bo.acceptFriend(a.user.id).relation == Relation.FRIENDS)
    ra.waitFor("friend accepted") {
        (it as? ZajelEvent.Friend)?.takeIf { f -> f.relation == Relation.FRIENDS }
    }

    // Both ways, live, through the listener.
    val m1 = ada.send(b.user.id, "hello from kotlin")
    val conv = m1.conversation
    check(m1.seq == 1uL)
    val got = rb.waitFor("message to bo") {
        (it as? ZajelEvent.Message)?.takeIf { m -> m.message.id == m1.id }
    }
    check(!got.replayed)
    val m2 = bo.send(conv, "hello back")
    ra.waitFor("message to ada") { (it as? ZajelEvent.Message)?.takeIf { m -> m.message.id == m2.id } }
    check(ada.markRead(conv, m2.seq) == 2uL)
    rb.waitFor("read mark") { (it as? ZajelEvent.Read)?.takeIf { r -> r.seq == 2uL } }
    val page = ada.history(conv, HistoryQuery())
    check(page.messages.map { it.body } == listOf("hello from kotlin", "hello back")) { page }

    // Server restart: a send made while it is down completes once it is back.
    val address = server.url.removePrefix("http://")
    server.stop()
    ra.waitFor("reconnecting") { (it as? ZajelEvent.State)?.takeIf { s -> s.state is ConnectionState.Reconnecting } }
    val pending = GlobalScope.async { ada.send(conv, "sent while the server was down") }
    delay(500)
    check(!pending.isCompleted) { "a send completes only once the server stored it" }
    server.start(address)
    val m3 = withTimeout(15_000) { pending.await() }
    check(m3.seq == 3uL)
    rb.waitFor("message after restart") { (it as? ZajelEvent.Message)?.takeIf { m -> m.message.id == m3.id } }
    bo.waitOnline()
    val m4 = bo.send(conv, "welcome back")
    ra.waitFor("reply after restart") { (it as? ZajelEvent.Message)?.takeIf { m -> m.message.id == m4.id } }
    val all = bo.history(conv, HistoryQuery())
    check(all.messages.map { it.seq } == listOf(1uL, 2uL, 3uL, 4uL)) { all }
    check(rb.messages().map { it.id } == listOf(m1.id, m3.id)) { "exactly once: ${rb.messages()}" }
    check(ra.messages().map { it.id } == listOf(m2.id, m4.id)) { "exactly once: ${ra.messages()}" }
    // Events come on the SDK's thread (JNA names it Thread-N), never on the caller's.
    check(Thread.currentThread().name !in ra.threads) { ra.threads }

    // Typed errors.
    val stranger = register(server.url, "ksam$tag", PASSWORD)
    val refused = assertThrows<ZajelException.Rejected>("send to a stranger") {
        runBlocking { ada.send(stranger.user.id, "hi") }
    }
    check(refused.code == ErrorCode.NOT_FRIENDS)
    check(errorCodeWireName(refused.code) == "not_friends")
    val taken = assertThrows<ZajelException.Rejected>("register twice") {
        runBlocking { register(server.url, "kada$tag", PASSWORD) }
    }
    check(taken.code == ErrorCode.USERNAME_TAKEN)
    assertThrows<ZajelException.InvalidArgument>("a bad id") { runBlocking { ada.block("not-an-id") } }
    assertThrows<ZajelException.InvalidArgument>("a bad conversation") { ada.typing("dm.x.y", true) }
    assertThrows<ZajelException.SignedOut>("a bad token") {
        runBlocking { connect(server.url, "bogus", Recorder()) }
    }
    ada.ping() // the connection survived all of that

    ada.disconnect()
    ra.waitFor("closed") { (it as? ZajelEvent.State)?.takeIf { s -> s.state == ConnectionState.Closed } }
    assertThrows<ZajelException.Closed>("a call after disconnect") { runBlocking { ada.ping() } }
    bo.logout()
    assertThrows<ZajelException.SignedOut>("whoami after logout") { runBlocking { whoami(server.url, b.token) } }
    ada.close()
    bo.close()
}
