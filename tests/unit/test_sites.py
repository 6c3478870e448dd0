"""Where requests may go: origins, the configured Label Studio, the allow-list, token paths."""

from __future__ import annotations

import pytest
from zerolabel.errors import ConfigError
from zerolabel.sites import (
    ALLOWED_HOSTS_SETTING,
    Destinations,
    LabelStudioSites,
    Origin,
    Route,
    parse_allowed_hosts,
    parse_origin,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://LS.example/x", Origin("http", "ls.example", 80), id="default-http"),
        pytest.param("HTTPS://ls.example:443", Origin("https", "ls.example", 443), id="https"),
        pytest.param("http://ls:8080/a?b", Origin("http", "ls", 8080), id="port"),
        pytest.param("http://[::1]:8080/", Origin("http", "::1", 8080), id="ipv6"),
        pytest.param("ftp://ls.example/", None, id="ftp"),
        pytest.param("/data/upload/1/x.png", None, id="relative"),
        pytest.param("http://ls:notaport/", None, id="bad-port"),
        pytest.param("http://ls:0/", None, id="port-zero"),
        pytest.param("http://[::1/", None, id="open-bracket"),
    ],
)
def test_an_origin_has_its_default_port_filled_in(url: str, expected: Origin | None):
    assert parse_origin(url) == expected


def test_an_origin_reads_as_scheme_host_and_port():
    assert str(Origin("https", "ls.example", 443)) == "https://ls.example:443"


def test_sites_match_origins_with_default_ports_and_refuse_confusing_urls():
    sites = LabelStudioSites.configure("http://ls", ["https://ls.example/base/"])
    assert sites.find("http://LS:80/anything") is sites.primary
    assert sites.find("https://ls.example:443") is sites.sites[1]
    for url in ("http://ls:8080", "https://ls", "http://u@ls", "http://evil\\@ls", "ls"):
        assert sites.find(url) is None, url
    origin = sites.sites[1].origin
    assert sites.may_send_token(origin, "/base/data/upload/1/x.png")
    assert not sites.may_send_token(origin, "/data/upload/1/x.png")  # outside its path
    assert not sites.may_send_token(origin, "/base/api/projects/")


def test_an_alias_of_a_configured_origin_is_kept_once():
    sites = LabelStudioSites.configure("http://ls:8080", ["http://LS:8080/", "http://alias"])
    assert [site.url for site in sites.sites] == ["http://ls:8080", "http://alias"]
    assert (
        sites.describe()
        == "LABEL_STUDIO_URL=http://ls:8080, ZEROLABEL_LABEL_STUDIO_ALIASES=http://alias"
    )


@pytest.mark.parametrize(
    ("url", "images_only", "expected"),
    [
        pytest.param("http://ls/data/upload/1/x.png", True, True, id="image-path"),
        pytest.param("http://ls/api/projects/", True, False, id="api-for-images"),
        pytest.param("http://ls/api/projects/", False, True, id="api-for-the-client"),
        pytest.param("http://ls/data/upload/1/x.png\n", True, False, id="line-break"),
        pytest.param("http://ls:81/data/upload/1/x.png", True, False, id="other-port"),
    ],
)
def test_the_token_goes_only_where_the_sites_say(url: str, images_only: bool, expected: bool):
    sites = LabelStudioSites.configure("http://ls")
    assert sites.token_may_go_to(url, images_only=images_only) is expected


def test_allowed_hosts_are_parsed_and_checked():
    assert parse_allowed_hosts("a.com, b.com:8443 c") == {"a.com", "b.com:8443", "c"}
    for bad in ("a.com/path", "user@a.com", "a.com:notaport"):
        with pytest.raises(ConfigError, match=ALLOWED_HOSTS_SETTING):
            parse_allowed_hosts(bad)


def test_one_answer_per_url_of_an_image_download():
    sites = LabelStudioSites.configure("http://ls:8080/base", ["https://ls.example"])
    destinations = Destinations(sites, {"images.example", "cdn.example:8443"})
    primary, alias = sites.sites
    ls = Origin("http", "ls", 8080)
    assert destinations.route(ls, "/base/data/upload/1/x.png") == Route(
        primary, "/data/upload/1/x.png"
    )
    assert destinations.route(ls, "/base/data/local-files/") == Route(primary, "/data/local-files/")
    found = destinations.route(Origin("https", "ls.example", 443), "/data/upload/2/y.png")
    assert found == Route(alias, "/data/upload/2/y.png") and found.carries_token
    for origin, path in (
        (ls, "/base/api/projects/"),  # the API of a site: allowed, never the token
        (ls, "/data/upload/1/x.png"),  # outside the site's path
        (Origin("https", "ls", 8080), "/base/data/upload/1/x.png"),  # same host, other scheme
        (Origin("http", "images.example", 80), "/data/upload/1/x.png"),  # an allowed host
        (Origin("https", "cdn.example", 8443), "/a.png"),
    ):
        route = destinations.route(origin, path)
        assert route is not None and not route.carries_token, (origin, path)
    for origin in (
        Origin("http", "images.example", 8080),  # another port of an allowed host
        Origin("http", "sub.images.example", 80),
        Origin("http", "evil", 8080),
    ):
        assert destinations.route(origin, "/data/upload/1/x.png") is None, origin
